package dnsmsg_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// expectClosed waits for the server to close c: a read ends with EOF or an
// error, and no data.
func expectClosed(t testing.TB, c interface{ Read([]byte) (int, error) }) {
	t.Helper()
	n, err := io.ReadFull(c, make([]byte, 1))
	if err == nil || n != 0 || isTimeout(err) {
		t.Fatalf("read %d bytes, %v; want the connection closed by the server", n, err)
	}
}

func TestStreamZeroLengthEndsOnlyThatConnection(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		good := k.dial(t, m, l, dnsmsg.ClientConfig{})
		bad := k.raw(t, l)
		// A query, then a zero length: the query is answered, then the
		// connection ends.
		bad.Write(append(frame(queryID(t, "before.example", 1)), 0, 0))
		if r := readFrame(t, bad); dnsmsg.ID(r) != 1 {
			t.Errorf("reply to %d; want 1", dnsmsg.ID(r))
		}
		expectClosed(t, bad)
		if _, err := good.Exchange(context.Background(), query("good.example")); err != nil {
			t.Errorf("the other connection: %v", err)
		}
		if st := m.Stats().Of(k.stat); st.Dropped != 1 {
			t.Errorf("dropped %d; want 1 (the zero-length frame)", st.Dropped)
		}
		l.Close()
		wait()
	})
}

func TestStreamNonRequestsAreDroppedAndCounted(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		c := k.raw(t, l)
		resp := queryID(t, "resp.example", 9)
		dnsmsg.SetResponse(resp)
		c.Write(frame([]byte{1, 2, 3}, resp, queryID(t, "ok.example", 10)))
		if r := readFrame(t, c); dnsmsg.ID(r) != 10 {
			t.Errorf("reply to %d; want only the request, 10", dnsmsg.ID(r))
		}
		if st := m.Stats().Of(k.stat); st.Dropped != 2 {
			t.Errorf("dropped %d; want 2", st.Dropped)
		}
		c.Close()
		l.Close()
		if r := wait(); len(r.Data) != 1 {
			t.Errorf("server saw %d requests; want 1", len(r.Data))
		}
	})
}

func TestStreamLargestMessage(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		// A 65535-byte "query": a header, then padding the check accepts.
		big := make([]byte, dnsmsg.MaxSize)
		copy(big, queryID(t, "big.example", 3)[:dnsmsg.HeaderLen])
		big[5] = 0 // no question: the rest is opaque to the server
		wait := echoServer(t, l, asReply)
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if err := c.Send(big); err != nil {
			t.Fatal(err)
		}
		ev := nmtest.Next(t, c.Read(), nmtest.Timeout)
		if ev.Err != nil || len(ev.Data) != dnsmsg.MaxSize || !bytes.Equal(ev.Data[dnsmsg.HeaderLen:], big[dnsmsg.HeaderLen:]) {
			t.Fatalf("reply of %d bytes, %v; want the 65535 bytes back", len(ev.Data), ev.Err)
		}
		if err := c.Send(make([]byte, dnsmsg.MaxSize+1)); !errors.Is(err, nm.ErrTooLarge) {
			t.Errorf("sending 65536 bytes: %v; want ErrTooLarge", err)
		}
		c.Close()
		l.Close()
		wait()
	})
}

func TestStreamInFlightBound(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const bound, sent = 5, 40
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{MaxInFlight: bound})
		c := k.raw(t, l)
		var msgs [][]byte
		for i := 0; i < sent; i++ {
			msgs = append(msgs, queryID(t, "held.example", uint16(i)))
		}
		go c.Write(frame(msgs...))
		// The consumer holds every request: no more than the bound come.
		var held []nm.Event
		for i := 0; i < bound; i++ {
			held = append(held, nmtest.Next(t, l.Requests(), nmtest.Timeout))
		}
		select {
		case ev := <-l.Requests():
			t.Fatalf("request %d delivered beyond the bound of %d (err %v)", bound+1, bound, ev.Err)
		case <-time.After(quiet):
		}
		// Releasing one lets one more in.
		held[0].Handle.Detach()
		held = append(held[1:], nmtest.Next(t, l.Requests(), nmtest.Timeout))
		for _, ev := range held {
			ev.Handle.Send(asReply(ev.Data)[0])
			ev.Handle.Detach()
		}
		wait := echoServer(t, l, asReply)
		for i := 0; i < sent-1; i++ { // one was released unanswered
			readFrame(t, c)
		}
		c.Close()
		l.Close()
		if r := wait(); len(r.Data) != sent-bound-1 {
			t.Errorf("served %d more; want %d", len(r.Data), sent-bound-1)
		}
	})
}

func TestStreamOrderedRepliesInOrder(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{Ordered: true})
		// A consumer that answers on goroutines, the later the sooner: the
		// order still holds, since the next request waits for the last.
		go func() {
			for ev := range l.Requests() {
				if ev.Err != nil {
					continue
				}
				go func() {
					time.Sleep(time.Duration(100-dnsmsg.ID(ev.Data)) * 50 * time.Microsecond)
					ev.Handle.Send(asReply(ev.Data)[0])
					ev.Handle.Detach()
				}()
			}
		}()
		c := k.raw(t, l)
		var msgs [][]byte
		for i := 0; i < 20; i++ {
			msgs = append(msgs, queryID(t, "ordered.example", uint16(i)))
		}
		go c.Write(frame(msgs...))
		for i := 0; i < 20; i++ {
			if r := readFrame(t, c); dnsmsg.ID(r) != uint16(i) {
				t.Fatalf("reply %d has ID %d", i, dnsmsg.ID(r))
			}
		}
		l.Close()
	})
}

func TestStreamIdleTimerStopsWhileAnswering(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const idle = 40 * time.Millisecond
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{Stream: stream.Config{Timeouts: nm.Timeouts{Idle: idle}}})
		c := k.raw(t, l)
		c.Write(frame(queryID(t, "slow.example", 1)))
		req := nmtest.Next(t, l.Requests(), nmtest.Timeout)
		// Answer after several idle timeouts' worth: the connection waits.
		time.Sleep(4 * idle)
		if err := req.Handle.Send(asReply(req.Data)[0]); err != nil {
			t.Fatalf("reply after %v: %v; the idle timer ran while answering", 4*idle, err)
		}
		req.Handle.Detach()
		if r := readFrame(t, c); dnsmsg.ID(r) != 1 {
			t.Fatal("wrong reply")
		}
		// Nothing in flight: the idle timeout ends the connection.
		expectClosed(t, c)
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
	})
}

func TestStreamInitialTimeout(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{Stream: stream.Config{Timeouts: nm.Timeouts{Initial: 30 * time.Millisecond}}})
		c := k.raw(t, l)
		if k.stat == nm.TLS {
			c.(interface{ Handshake() error }).Handshake()
		}
		expectClosed(t, c) // never sent a query
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
	})
}

func TestStreamKeepalive(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const idle = 30 * time.Millisecond
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{Stream: stream.Config{Timeouts: nm.Timeouts{Idle: idle, Keepalive: time.Hour}}})
		c := k.raw(t, l)
		c.Write(frame(queryID(t, "ka.example", 1)))
		req := nmtest.Next(t, l.Requests(), nmtest.Timeout)
		if d, ok := dnsmsg.KeepaliveTimeout(req.Handle); !ok || d != time.Hour {
			t.Errorf("KeepaliveTimeout = %v, %v; want 1h, true", d, ok)
		}
		req.Handle.SetKeepalive(true)
		req.Handle.Send(asReply(req.Data)[0])
		req.Handle.Detach()
		readFrame(t, c)
		// Idle for many idle timeouts: still open, since keepalive.
		c.SetReadDeadline(time.Now().Add(5 * idle))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read on a kept-alive connection: %v; want our own deadline", err)
		}
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
	})
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func TestExchangeRetriesTruncatedOverTCP(t *testing.T) {
	m := newManager(t, 1)
	// The UDP side needs the TCP listener's port; another socket may hold
	// it for UDP, so take another port until both are free.
	var tl *dnsmsg.Listener
	var ul *dnsmsg.Listener
	for try := 0; ul == nil; try++ {
		var err error
		tl, err = dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ul, err = dnsmsg.ListenUDP(context.Background(), m, tl.Addr().String(), dnsmsg.ServerConfig{})
		if err != nil {
			if try == 20 {
				t.Fatalf("no port free for both UDP and TCP after %d tries: %v", try, err)
			}
			tl.Close()
			ul = nil
		}
	}
	waitU := echoServer(t, ul, func(req []byte) [][]byte {
		q, _ := dnsmsg.Parse(req)
		r := new(dns.Msg)
		r.SetReply(q)
		r.Truncated = true
		b, _ := r.Pack()
		return [][]byte{b}
	})
	waitT := echoServer(t, tl, func(req []byte) [][]byte {
		q, _ := dnsmsg.Parse(req)
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}})
		b, _ := r.Pack()
		return [][]byte{b}
	})
	r, err := dnsmsg.Exchange(context.Background(), m, tl.Addr().String(), query("tc.example"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("reply truncated=%v with %d answers; want the full TCP reply", r.Truncated, len(r.Answer))
	}
	ul.Close()
	tl.Close()
	if u, tc := waitU(), waitT(); len(u.Data) != 1 || len(tc.Data) != 1 {
		t.Errorf("UDP saw %d, TCP %d; want 1 each", len(u.Data), len(tc.Data))
	}
}

// TestStreamSilentConnections: a connection that has sent nothing yet
// (over TCP the server keeps no state of its own for it, only the socket
// and a goroutine waiting) is served once it speaks, whenever that is,
// and one that never speaks ends with the listener's Close.
func TestStreamSilentConnections(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		silent := k.raw(t, l)
		late := k.raw(t, l)
		// Another client is answered while both wait.
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if _, err := c.Exchange(context.Background(), query("first.example")); err != nil {
			t.Fatal(err)
		}
		if _, err := late.Write(frame(queryID(t, "late.example", 7))); err != nil {
			t.Fatal(err)
		}
		if r := readFrame(t, late); dnsmsg.ID(r) != 7 || !dnsmsg.IsResponse(r) {
			t.Fatalf("late speaker: got %x; want the reply to its query (ID 7)", r)
		}
		l.Close()
		expectClosed(t, silent)
		if r := wait(); len(r.Data) != 2 || !errors.Is(r.Final, nm.ErrCanceled) {
			t.Errorf("server: %d requests, final %v; want 2, nm.ErrCanceled", len(r.Data), r.Final)
		}
	})
}
