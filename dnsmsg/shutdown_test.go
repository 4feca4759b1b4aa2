package dnsmsg_test

import (
	"context"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestShutdownUnderLoad closes a server's manager while clients load it on
// every transport: Close returns, every listener channel gets its final
// event and closes, every reply sent with SendAsync completes exactly once
// (with an error once the conversation is gone), the clients' reads end,
// and no goroutine is left (TestMain's goleak).
func TestShutdownUnderLoad(t *testing.T) {
	ms := nmtest.Manager(t, 2)
	ctx := context.Background()
	udp, err := dnsmsg.ListenUDP(ctx, ms, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tcp := skinds[0].listen(t, ms, dnsmsg.ServerConfig{})
	dot := skinds[1].listen(t, ms, dnsmsg.ServerConfig{})
	doh := hkinds[1].listen(t, ms, dnsmsg.HTTPConfig{})
	chans := map[string]<-chan nm.Event{"udp": udp.Requests(), "tcp": tcp.Requests(), "dot": dot.Requests(), "doh": requests(doh)}

	// Consumers: reply asynchronously, count sends and their completions.
	// As nm.Handle.SendAsync asks, done has room for every send kept in
	// flight: at most cap(done), waiting for a completion at the cap.
	var sends, completions atomic.Int64
	var served sync.Map // transport -> *atomic.Int64
	var consumers sync.WaitGroup
	for name, ch := range chans {
		n := new(atomic.Int64)
		served.Store(name, n)
		consumers.Go(func() {
			done := make(chan error, 64)
			var mine int64
			for ev := range ch {
				for drained := false; !drained; {
					select {
					case <-done:
						completions.Add(1)
						mine--
					default:
						drained = true
					}
				}
				if ev.Err != nil {
					continue
				}
				n.Add(1)
				if mine == int64(cap(done)) {
					<-done
					completions.Add(1)
					mine--
				}
				if ev.Handle.SendAsync(asReply(ev.Data)[0], done) == nil {
					sends.Add(1)
					mine++
				}
				ev.Handle.Detach()
			}
			for ; mine > 0; mine-- {
				<-done
				completions.Add(1)
			}
		})
	}

	// Clients on a manager of their own, each in a loop of exchanges.
	mc := nmtest.Manager(t, 2)
	stop := make(chan struct{})
	var clients sync.WaitGroup
	dials := map[string]func() (*dnsmsg.Conn, error){
		"udp": func() (*dnsmsg.Conn, error) {
			return dnsmsg.DialUDP(ctx, mc, udp.Addr().String(), dnsmsg.ClientConfig{ReadTimeout: 200 * time.Millisecond})
		},
		"tcp": func() (*dnsmsg.Conn, error) { return skinds[0].dialErr(mc, tcp.Addr().String(), dnsmsg.ClientConfig{}) },
		"dot": func() (*dnsmsg.Conn, error) { return skinds[1].dialErr(mc, dot.Addr().String(), dnsmsg.ClientConfig{}) },
		"doh": func() (*dnsmsg.Conn, error) { return hkinds[1].dialErr(mc, doh, dnsmsg.ClientConfig{}) },
	}
	for name, dial := range dials {
		for i := 0; i < 4; i++ {
			c, err := dial()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			clients.Go(func() {
				defer c.Close()
				for id := uint16(0); ; id++ {
					select {
					case <-stop:
						return
					default:
					}
					if c.Send(queryID(t, "load.example", id)) != nil {
						return
					}
					ev := <-c.Read()
					if ev.Err != nil && !isTimeout(ev.Err) {
						return // the server went away: this client's final event
					}
				}
			})
		}
	}

	// Full load on every transport, then the server's manager closes.
	deadline := time.Now().Add(nmtest.Timeout)
	for name := range chans {
		v, _ := served.Load(name)
		for v.(*atomic.Int64).Load() < 100 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d requests served", name, v.(*atomic.Int64).Load())
			}
			time.Sleep(time.Millisecond) // polling a counter
		}
	}
	closed := make(chan struct{})
	go func() { ms.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(nmtest.Timeout):
		t.Fatal("Manager.Close did not return under load")
	}
	waitOrFail(t, &consumers, "the listeners' channels did not all close")
	if s, c := sends.Load(), completions.Load(); s != c {
		t.Errorf("%d replies sent, %d completed; want every one completed", s, c)
	}
	close(stop)
	waitOrFail(t, &clients, "the clients did not all stop")
}

// waitOrFail waits for wg, failing the test if it takes longer than
// nmtest.Timeout.
func waitOrFail(t *testing.T, wg *sync.WaitGroup, msg string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(nmtest.Timeout):
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatal(msg)
	}
}
