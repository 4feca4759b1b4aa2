package dnsmsg_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// shortCtx is the context of a query that must fail: short, as only the
// error is checked, not how long it took.
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func longCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// silent reads queries and never answers.
func silent(c net.Conn) {
	for {
		if _, err := readFrameErr(c); err != nil {
			return
		}
	}
}

// TestClientNoReply: an upstream that never answers gives a timeout, on a
// stream, over UDP and past ReadTimeout; the caller's cancel is reported
// as such.
func TestClientNoReply(t *testing.T) {
	m := nmtest.Manager(t, 1)
	tcp := fakeTCP(t, silent)
	udp := fakeUDP(t, func([]byte) [][]byte { return nil })
	c := testClient(t, m, dnsmsg.ClientConfig{MaxFailures: -1})
	for _, uri := range []string{"tcp://" + tcp.addr, "udp://" + udp.addr} {
		_, err := c.Exchange(shortCtx(t), uri, question("a.example.", dns.TypeA))
		if !errors.Is(err, nm.ErrTimedOut) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Exchange = %v; want nm.ErrTimedOut", uri, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err = c.Exchange(ctx, uri, question("b.example.", dns.TypeA))
		if !errors.Is(err, nm.ErrCanceled) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: canceled Exchange = %v; want nm.ErrCanceled", uri, err)
		}
	}
	c2 := testClient(t, m, dnsmsg.ClientConfig{ReadTimeout: 50 * time.Millisecond})
	_, err := c2.Exchange(longCtx(t), "tcp://"+tcp.addr, question("c.example.", dns.TypeA))
	if !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("Exchange past ReadTimeout = %v; want nm.ErrTimedOut", err)
	}
}

// TestClientStalledHandshake: a DoT or DoH upstream that accepts and never
// completes TLS: the dial ends with the caller's context.
func TestClientStalledHandshake(t *testing.T) {
	m := nmtest.Manager(t, 1)
	f := fakeTCP(t, silent)
	c := testClient(t, m, dnsmsg.ClientConfig{})
	for _, uri := range []string{"tls://" + f.addr, "https://" + f.addr + "/dns-query"} {
		_, err := c.Exchange(shortCtx(t), uri, question("a.example.", dns.TypeA))
		if !errors.Is(err, nm.ErrTimedOut) {
			t.Errorf("%s: Exchange = %v; want nm.ErrTimedOut", uri, err)
		}
	}
}

// TestClientInFlightPlace: with its one connection's one place taken, a
// query waits for it within its context, then gets it when freed.
func TestClientInFlightPlace(t *testing.T) {
	m := nmtest.Manager(t, 1)
	got := make(chan []byte, 2)
	f := fakeTCP(t, func(c net.Conn) {
		for {
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			got <- q
		}
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxConns: 1, MaxInFlight: 1, MaxFailures: -1})
	uri := "tcp://" + f.addr
	first, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exchange(first, uri, question("first.example.", dns.TypeA))
		done <- err
	}()
	<-got // the first query holds the place
	_, err := c.Exchange(shortCtx(t), uri, question("second.example.", dns.TypeA))
	if !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("Exchange waiting for a place = %v; want nm.ErrTimedOut", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("first Exchange = %v; want context.Canceled", err)
	}
	// The place is free again: a third query goes out.
	go c.Exchange(shortCtx(t), uri, question("third.example.", dns.TypeA))
	if q := <-got; !dnsNameIs(q, "third.example.") {
		t.Errorf("upstream got %x; want the third query", q)
	}
}

func dnsNameIs(wire []byte, name string) bool {
	m := new(dns.Msg)
	return m.Unpack(wire) == nil && len(m.Question) == 1 && m.Question[0].Name == name
}

// TestClientWrongAndTwice: replies with a wrong ID or a wrong question
// are dropped (the caller times out), and a reply sent twice reaches its
// caller once, the duplicate dropped; the connection goes on.
func TestClientWrongAndTwice(t *testing.T) {
	m := nmtest.Manager(t, 1)
	f := fakeTCP(t, func(c net.Conn) {
		for {
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			switch {
			case dnsNameIs(q, "wrongid.example."):
				writeFrame(c, answerWire(t, q, dnsmsg.ID(q)+1, false))
			case dnsNameIs(q, "wrongq.example."):
				r := new(dns.Msg).SetQuestion("other.example.", dns.TypeA)
				r.Id, r.Response = dnsmsg.ID(q), true
				b, _ := r.Pack()
				writeFrame(c, b)
			default:
				writeFrame(c, answerWire(t, q, dnsmsg.ID(q), false))
				writeFrame(c, answerWire(t, q, dnsmsg.ID(q), false))
			}
		}
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxConns: 1, MaxFailures: -1})
	uri := "tcp://" + f.addr
	for _, name := range []string{"wrongid.example.", "wrongq.example."} {
		if _, err := c.Exchange(shortCtx(t), uri, question(name, dns.TypeA)); !errors.Is(err, nm.ErrTimedOut) {
			t.Errorf("Exchange(%s) = %v; want nm.ErrTimedOut", name, err)
		}
	}
	for i := range 3 {
		q := question(fmt.Sprintf("twice%d.example.", i), dns.TypeTXT)
		r, err := c.Exchange(longCtx(t), uri, q)
		if err != nil {
			t.Fatalf("Exchange(%s) = %v", q.Question[0].Name, err)
		}
		checkReply(t, q, r)
	}
	waitDropped(t, m, nm.TCP, 2+2) // the wrong two, and two duplicates at least
}

// TestClientResetAndClose: an upstream that closes each connection after
// 2 queries, or resets it in the middle of a reply: each caller gets its
// reply (the client redials) or a clear connection error.
func TestClientResetAndClose(t *testing.T) {
	m := nmtest.Manager(t, 1)
	var conns atomic.Int32
	closer := fakeTCP(t, func(c net.Conn) {
		conns.Add(1)
		for range 2 {
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			writeFrame(c, answerWire(t, q, dnsmsg.ID(q), false))
		}
		c.Close()
	})
	resetter := fakeTCP(t, func(c net.Conn) {
		q, err := readFrameErr(c)
		if err != nil {
			return
		}
		r := answerWire(t, q, dnsmsg.ID(q), false)
		c.Write([]byte{0, byte(len(r))})
		c.Write(r[:5])
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxConns: 1, MaxFailures: -1})
	for i := range 7 {
		q := question(fmt.Sprintf("n%d.example.", i), dns.TypeTXT)
		r, err := c.Exchange(longCtx(t), "tcp://"+closer.addr, q)
		if err != nil {
			t.Fatalf("query %d to an upstream closing after 2: %v", i, err)
		}
		checkReply(t, q, r)
	}
	if n := conns.Load(); n < 4 {
		t.Errorf("%d connections for 7 queries, 2 each; want 4", n)
	}
	_, err := c.Exchange(longCtx(t), "tcp://"+resetter.addr, question("r.example.", dns.TypeA))
	if !errors.Is(err, nm.ErrConnReset) && !errors.Is(err, nm.ErrEOF) {
		t.Errorf("Exchange to a resetting upstream = %v; want nm.ErrConnReset or nm.ErrEOF", err)
	}
}

// TestClientUDPFaults: over UDP, replies with a wrong ID, a wrong
// question or over MaxUDPSize are dropped; the right one gets through;
// a truncated reply is asked again over TCP.
func TestClientUDPFaults(t *testing.T) {
	m := nmtest.Manager(t, 1)
	answerTCP := func(c net.Conn) {
		for {
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			writeFrame(c, answerWire(t, q, dnsmsg.ID(q), false))
		}
	}
	// The UDP upstream on the TCP upstream's port, for the TC retry: a
	// port whose UDP side another socket holds is passed over.
	var pc net.PacketConn
	for try := 0; pc == nil; try++ {
		tcp := fakeTCP(t, answerTCP)
		_, port, _ := net.SplitHostPort(tcp.addr)
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:"+port); err != nil && try == 10 {
			t.Fatalf("no port free for both TCP and UDP in 10 tries: %v", err)
		}
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if dnsNameIs(q, "tc.example.") {
				pc.WriteTo(answerWire(t, q, dnsmsg.ID(q), true), from)
				continue
			}
			pc.WriteTo(answerWire(t, q, dnsmsg.ID(q)^1, false), from)
			big := answerWire(t, q, dnsmsg.ID(q), false)
			pc.WriteTo(append(big, make([]byte, 600)...), from)
			pc.WriteTo(answerWire(t, q, dnsmsg.ID(q), false), from)
		}
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxUDPSize: 512})
	for _, name := range []string{"a.example.", "tc.example."} {
		q := question(name, dns.TypeTXT)
		q.Id = 7
		r, err := c.Exchange(longCtx(t), "udp://"+pc.LocalAddr().String(), q)
		if err != nil {
			t.Fatalf("Exchange(%s) = %v", name, err)
		}
		checkReply(t, q, r)
		if r.Truncated {
			t.Errorf("reply to %s truncated; want the TCP one", name)
		}
	}
	waitDropped(t, m, nm.UDP, 2)
}

// TestClientBackoff: an upstream that fails MaxFailures times in a row is
// marked down: calls fail at once with ErrUpstreamDown; after the backoff
// one probe goes through, and once it succeeds the upstream is back.
func TestClientBackoff(t *testing.T) {
	m := nmtest.Manager(t, 1)
	var healthy atomic.Bool
	f := fakeTCP(t, func(c net.Conn) {
		for healthy.Load() {
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			writeFrame(c, answerWire(t, q, dnsmsg.ID(q), false))
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // failing: reset at once
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxFailures: 2, Backoff: 20 * time.Millisecond})
	uri := "tcp://" + f.addr
	for i := range 2 {
		_, err := c.Exchange(longCtx(t), uri, question("a.example.", dns.TypeA))
		if !errors.Is(err, nm.ErrConnReset) && !errors.Is(err, nm.ErrEOF) {
			t.Fatalf("Exchange %d = %v; want a connection error", i, err)
		}
	}
	_, err := c.Exchange(longCtx(t), uri, question("a.example.", dns.TypeA))
	if !errors.Is(err, dnsmsg.ErrUpstreamDown) {
		t.Fatalf("Exchange after 2 failures = %v; want ErrUpstreamDown", err)
	}
	healthy.Store(true)
	deadline := time.Now().Add(nmtest.Timeout)
	for {
		q := question("b.example.", dns.TypeTXT)
		r, err := c.Exchange(longCtx(t), uri, q)
		if err == nil {
			checkReply(t, q, r)
			break
		}
		if !errors.Is(err, dnsmsg.ErrUpstreamDown) || time.Now().After(deadline) {
			t.Fatalf("Exchange after the backoff = %v; want its reply", err)
		}
		time.Sleep(time.Millisecond) // polling until the backoff ends
	}
}

// TestClientClose: closing the Client fails its queries in flight and
// refuses later ones; closing the manager under a Client fails its
// queries too, and nothing is left running (goleak).
func TestClientClose(t *testing.T) {
	for _, closeManager := range []bool{false, true} {
		t.Run(fmt.Sprintf("manager=%v", closeManager), func(t *testing.T) {
			m, err := nm.New(nm.Config{Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := make(chan struct{}, 4)
			f := fakeTCP(t, func(c net.Conn) {
				for {
					if _, err := readFrameErr(c); err != nil {
						return
					}
					got <- struct{}{}
				}
			})
			c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{MaxConns: 1, ReadTimeout: nm.NoTimeout})
			defer c.Close()
			done := make(chan error, 2)
			for i := range 2 {
				go func() {
					_, err := c.Exchange(context.Background(), "tcp://"+f.addr, question(fmt.Sprintf("c%d.example.", i), dns.TypeA))
					done <- err
				}()
			}
			<-got
			<-got
			if closeManager {
				m.Close()
			} else {
				c.Close()
			}
			for range 2 {
				err := <-done
				if !errors.Is(err, nm.ErrCanceled) && !(closeManager && errors.Is(err, nm.ErrShuttingDown)) {
					t.Errorf("query in flight at close = %v; want nm.ErrCanceled (or, at the manager's close, nm.ErrShuttingDown)", err)
				}
			}
			_, err = c.Exchange(context.Background(), "tcp://"+f.addr, question("late.example.", dns.TypeA))
			if !errors.Is(err, nm.ErrClosed) && !errors.Is(err, nm.ErrShuttingDown) {
				t.Errorf("query after close = %v; want nm.ErrClosed or nm.ErrShuttingDown", err)
			}
		})
	}
}
