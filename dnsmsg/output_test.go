package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// deafConn connects to l with a 4 KiB receive buffer, set before
// connecting so that the window stays small (TLS with ALPN dot for DoT): a
// client that will read nothing.
func deafConn(t *testing.T, k skind, l *dnsmsg.Listener) net.Conn {
	t.Helper()
	d := net.Dialer{Control: smallRcvBuf}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(nmtest.Timeout))
	if k.stat == nm.TLS {
		conf := clientTLS.Clone()
		conf.NextProtos = []string{"dot"}
		c = tls.Client(c, conf)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// heapInUse returns the live heap after two collections (the second
// empties the pools' victim caches).
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestNonReadingPipeliner (issue #13): a client pipelines 20 000 queries
// whose replies are 4 KiB and never reads. The consumer serves every
// request from ONE goroutine, as the package documentation teaches; a
// reply that waited for the attacker would hold it, and every other
// client with it, until the write timeout. Here 20 good clients on the
// same listener get 200 answers, each within a second, while the attacker
// holds on (its write timeout is 5 s); the attacker's connection then
// ends at the write timeout, counted; the heap stays within 32 MiB of
// where it started.
func TestNonReadingPipeliner(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.Timeouts.Write = 5 * time.Second
		l := k.listen(t, m, cfg)
		var flood atomic.Int64 // attacker's requests answered
		pad := make([]byte, 4<<10)
		served := make(chan struct{})
		go func() {
			defer close(served)
			for ev := range l.Requests() {
				if ev.Err != nil {
					continue
				}
				r := asReply(ev.Data)[0]
				if bytes.Contains(ev.Data, []byte("flood")) {
					flood.Add(1)
					r = append(r, pad...)
				}
				ev.Handle.Send(r)
				ev.Handle.Detach()
			}
		}()
		base := heapInUse()

		attacker := deafConn(t, k, l)
		var queries []byte
		for i := 0; i < 20000; i++ {
			queries = append(queries, frame(queryID(t, "flood.example", uint16(i)))...)
		}
		wrote := make(chan error, 1)
		go func() {
			_, err := attacker.Write(queries)
			wrote <- err
		}()
		waitFor(t, "the attack to start", func() bool { return flood.Load() >= 64 })

		var good [20]*dnsmsg.Conn // 20 conversations, served in turn
		for i := range good {
			good[i] = k.dial(t, m, l, dnsmsg.ClientConfig{})
		}
		for i := 0; i < 200; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := good[i%len(good)].Exchange(ctx, query("good.example"))
			cancel()
			if err != nil {
				t.Fatalf("good query %d (%d flood replies sent): %v", i, flood.Load(), err)
			}
		}
		st := m.Stats().Of(k.stat)
		if st.WriteTimeouts != 0 || st.OutputFull != 0 {
			t.Fatalf("the attacker was cut off before the good client was done (%d flood replies sent, stats %+v): the test shows nothing", flood.Load(), st)
		}
		if grew := int64(heapInUse()) - int64(base); grew > 32<<20 {
			t.Errorf("heap grew by %d MiB while the attacker held on; want under 32", grew>>20)
		}
		waitFor(t, "the attacker to be cut off", func() bool {
			st := m.Stats().Of(k.stat)
			return st.WriteTimeouts+st.OutputFull >= 1
		})
		attacker.Close()
		<-wrote
		for _, g := range good {
			g.Close()
		}
		l.Close()
		<-served
		t.Logf("%d flood replies sent before the cut-off", flood.Load())
	})
}

// waitFor polls cond until it holds; nmtest.Timeout bounds the wait as a
// failure, it is not a delay.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
