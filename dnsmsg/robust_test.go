package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// Hostile peers. Each test attacks with one class of bad behaviour and
// checks that the bad conversation ends with a counted error while the
// others go on.

// TestSlowAndPartialFrames: connections that send half a length prefix,
// or a length and part of a message (first or after a whole query), then
// nothing, are closed at the initial or idle timeout, and while they hang
// a new client is served.
func TestSlowAndPartialFrames(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.Timeouts.Initial = 300 * time.Millisecond
		cfg.Stream.Timeouts.Idle = 300 * time.Millisecond
		l := k.listen(t, m, cfg)
		wait := echoServer(t, l, asReply)
		q := frame(queryID(t, "slow.example", 1))
		partials := [][]byte{
			q[:1],                            // half a length prefix
			q[:2],                            // a length, no message
			q[:len(q)/2],                     // a length and half a message
			append(bytes.Clone(q), q[:5]...), // a whole query, then part of the next: the idle timeout
		}
		var conns []net.Conn
		for i := 0; i < 40; i++ {
			c := k.raw(t, l)
			c.Write(partials[i%len(partials)])
			conns = append(conns, c)
		}
		// A good client is served while they hang.
		good := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if _, err := good.Exchange(context.Background(), query("good.example")); err != nil {
			t.Fatalf("a good client while 40 hang: %v", err)
		}
		for i, c := range conns {
			if i%len(partials) == 3 {
				if r := readFrame(t, c); dnsmsg.ID(r) != 1 {
					t.Fatalf("reply to %d; want 1", dnsmsg.ID(r))
				}
			}
			expectClosed(t, c)
		}
		good.Close()
		l.Close()
		if r := wait(); len(r.Data) != 1+len(conns)/len(partials) {
			t.Errorf("delivered %d requests; want %d", len(r.Data), 1+len(conns)/len(partials))
		}
	})
}

// TestPeerNeverReadsReplies (BIND CVE-2024-0760): a client that sends
// queries as fast as it can and never reads: the server stops reading once
// its unsent replies pass the backpressure bound, and resets the
// connection at the write timeout. Far fewer queries are taken than sent.
func TestPeerNeverReadsReplies(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.Timeouts.Write = 300 * time.Millisecond
		l := k.listen(t, m, cfg)
		// The consumer replies with 4 KiB (buffers fill fast); Send never
		// waits for the peer, and fails once the connection is reset.
		var delivered int
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range l.Requests() {
				if ev.Err != nil {
					continue
				}
				delivered++
				r := append(asReply(ev.Data)[0], make([]byte, 4096)...)
				ev.Handle.Send(r)
				ev.Handle.Detach()
			}
		}()
		c := k.raw(t, l)
		if tc, ok := underlyingTCP(c); ok {
			tc.SetReadBuffer(4096)
		}
		const sent = 20000
		var queries []byte
		for i := 0; i < sent; i++ {
			queries = append(queries, frame(queryID(t, "flood.example", uint16(i)))...)
		}
		c.SetWriteDeadline(time.Now().Add(nmtest.Timeout))
		_, werr := c.Write(queries)
		// The server ends the connection: the write, or a read after it,
		// fails (reset), long before our deadlines.
		if werr == nil {
			c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
			for werr == nil {
				_, werr = c.Read(make([]byte, 64<<10))
			}
		}
		if isTimeout(werr) {
			t.Fatalf("the connection is still open: %v", werr)
		}
		l.Close()
		<-done
		if delivered >= sent/2 {
			t.Errorf("%d of %d queries taken from a peer that reads nothing", delivered, sent)
		}
		if st := m.Stats().Of(k.stat); st.WriteTimeouts != 1 {
			t.Errorf("WriteTimeouts = %d; want the one connection cut off (%+v)", st.WriteTimeouts, st)
		}
	})
}

// underlyingTCP returns the TCP connection under c (through TLS).
func underlyingTCP(c net.Conn) (*net.TCPConn, bool) {
	switch c := c.(type) {
	case *net.TCPConn:
		return c, true
	case *tls.Conn:
		return underlyingTCP(c.NetConn())
	case *prefixed:
		return underlyingTCP(c.Conn)
	}
	return nil, false
}

// TestTinyQueriesInOneWrite (BIND CVE-2019-6477): 64 KiB of minimal
// queries in one write are taken a few at a time: a consumer that holds
// the requests it gets sees no more than the in-flight bound until it
// lets them go, and then all are answered.
func TestTinyQueriesInOneWrite(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const bound = 5
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{MaxInFlight: bound})
		tiny := make([]byte, dnsmsg.HeaderLen) // a header: the smallest query
		var b []byte
		n := 0
		for ; len(b)+2+len(tiny) <= 64<<10; n++ {
			binary.BigEndian.PutUint16(tiny, uint16(n))
			b = append(b, frame(tiny)...)
		}
		c := k.raw(t, l)
		go c.Write(b)
		replies := make(chan error, 1)
		go func() {
			for i := 0; i < n; i++ {
				if _, err := readFrameErr(c); err != nil {
					replies <- fmt.Errorf("reply %d of %d: %w", i, n, err)
					return
				}
			}
			replies <- nil
		}()
		// Hold the first requests: exactly the bound comes, then nothing.
		var held []nm.Event
		for len(held) < bound {
			held = append(held, nmtest.Next(t, l.Requests(), nmtest.Timeout))
		}
		select {
		case ev := <-l.Requests():
			t.Fatalf("request %d of one connection delivered beyond the bound of %d (err %v)", bound+1, bound, ev.Err)
		case <-time.After(quiet):
		}
		for _, ev := range held {
			answer(t, ev)
		}
		wait := nmtest.Serve(t, l.Requests(), asReply)
		if err := <-replies; err != nil {
			t.Fatal(err)
		}
		l.Close()
		if r := wait(); len(r.Data) != n-bound {
			t.Errorf("delivered %d after the first %d; want %d", len(r.Data), bound, n-bound)
		}
	})
}

// TestManyIdleConnectionsQuota: idle connections up to the quota; the
// next waits, those already in keep working, and it is served once one
// leaves.
func TestManyIdleConnectionsQuota(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const quota = 20
		m := newManager(t, 2)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.MaxConns = quota
		l := k.listen(t, m, cfg)
		wait := echoServer(t, l, asReply)
		working := k.dial(t, m, l, dnsmsg.ClientConfig{})
		var idle []*dnsmsg.Conn
		for i := 1; i < quota; i++ {
			idle = append(idle, k.dial(t, m, l, dnsmsg.ClientConfig{}))
		}
		late := k.raw(t, l)
		served := make(chan error, 1)
		go func() {
			if _, err := late.Write(frame(queryID(t, "late.example", 9))); err != nil {
				served <- err
				return
			}
			_, err := readFrameErr(late)
			served <- err
		}()
		for i := 0; i < 3; i++ {
			if _, err := working.Exchange(context.Background(), query("working.example")); err != nil {
				t.Fatalf("a connection within the quota: %v", err)
			}
		}
		select {
		case err := <-served:
			t.Fatalf("the connection over the quota was served (%v)", err)
		case <-time.After(quiet):
		}
		idle[0].Close()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("the waiting connection: %v", err)
			}
		case <-time.After(nmtest.Timeout):
			t.Fatal("the waiting connection was not served once a place was free")
		}
		l.Close()
		wait()
	})
}

// TestTLSHandshakeStopsHalfway: a client that sends its hello, takes the
// server's answer and then says nothing more is closed at the initial
// timeout.
func TestTLSHandshakeStopsHalfway(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.ServerConfig
	cfg.Stream.Timeouts.Initial = 200 * time.Millisecond
	l := skinds[1].listen(t, m, cfg)
	hello := clientHello(t)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	// Read the server's flight, then wait: the server closes.
	_, err = io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatal("the server kept a client stuck in its handshake")
	}
	l.Close()
	nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
	if st := m.Stats().Of(nm.TLS); st.RecvFailed != 1 {
		t.Errorf("failed handshakes %d; want 1", st.RecvFailed)
	}
}

// clientHello returns the bytes of a TLS ClientHello.
func clientHello(t *testing.T) []byte {
	var rec recorder
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"dot"}
	tls.Client(&rec, conf).Handshake() // fails on the first read
	if rec.Len() == 0 {
		t.Fatal("no ClientHello written")
	}
	return rec.Bytes()
}

// recorder is a net.Conn that keeps what is written and has nothing to
// read.
type recorder struct {
	bytes.Buffer
	net.Conn
}

func (r *recorder) Write(b []byte) (int, error) { return r.Buffer.Write(b) }
func (r *recorder) Read([]byte) (int, error)    { return 0, io.EOF }

// TestUDPOversized: datagrams over MaxUDPSize are dropped and counted.
func TestUDPOversized(t *testing.T) {
	m := newManager(t, 1)
	l, err := dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{MaxUDPSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	wait := echoServer(t, l, asReply)
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := append(queryID(t, "big.example", 1), make([]byte, 600)...)
	c.Write(big)
	c.Write(queryID(t, "small.example", 2))
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil || dnsmsg.ID(b[:n]) != 2 {
		t.Fatalf("first reply %x, %v; want the small query's", b[:n], err)
	}
	l.Close()
	if r := wait(); len(r.Data) != 1 {
		t.Errorf("delivered %d; want 1", len(r.Data))
	}
	if st := m.Stats().Of(nm.UDP); st.Dropped != 1 {
		t.Errorf("dropped %d; want 1", st.Dropped)
	}
}
