package dnsmsg_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// fakeDoH serves HTTP/2 over TLS on loopback with net/http's server and
// the test's handler, and returns the upstream URI.
func fakeDoH(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conf := serverTLS.Clone()
	conf.NextProtos = []string{"h2"}
	srv := &http.Server{Handler: h, TLSConfig: conf}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(l, conf))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "https://" + l.Addr().String() + dnsmsg.DefaultPath
}

// TestClientDoHIDZero: over DoH the query goes out with ID 0 (RFC 8484
// 4.1) and its reply comes back with the caller's ID.
func TestClientDoHIDZero(t *testing.T) {
	m := nmtest.Manager(t, 1)
	ids := make(chan uint16, 1)
	s := serveKind(t, m, "doh", dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		ids <- dnsmsg.ID(r.Wire())
		nameHandler(r)
	}))
	c := testClient(t, m, dnsmsg.ClientConfig{})
	q := question("zero.example.", dns.TypeTXT)
	q.Id = 4321
	r, err := c.Exchange(longCtx(t), s.addr, q)
	if err != nil {
		t.Fatal(err)
	}
	checkReply(t, q, r)
	if id := <-ids; id != 0 {
		t.Errorf("query ID on the wire %d; want 0", id)
	}
}

// TestClientDoHStatus: an HTTP error status fails that query only with a
// *RequestError holding it; a 5xx counts toward the upstream's failures.
func TestClientDoHStatus(t *testing.T) {
	m := nmtest.Manager(t, 1)
	uri := fakeDoH(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxFailures: 2})
	for range 2 {
		_, err := c.Exchange(longCtx(t), uri, question("a.example.", dns.TypeA))
		var re *dnsmsg.RequestError
		if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
			t.Fatalf("Exchange = %v; want a *RequestError with status 503", err)
		}
	}
	if _, err := c.Exchange(longCtx(t), uri, question("a.example.", dns.TypeA)); !errors.Is(err, dnsmsg.ErrUpstreamDown) {
		t.Errorf("Exchange after two 503 = %v; want ErrUpstreamDown", err)
	}
}

// TestClientDoHWaits: a DoH upstream that never answers: the query and a
// query waiting for the one in-flight place both end with their contexts.
func TestClientDoHWaits(t *testing.T) {
	m := nmtest.Manager(t, 1)
	got := make(chan struct{}, 2)
	uri := fakeDoH(t, func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done()
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxConns: 1, MaxInFlight: 1, MaxFailures: -1})
	first := make(chan error, 1)
	go func() {
		_, err := c.Exchange(shortCtx(t), uri, question("a.example.", dns.TypeA))
		first <- err
	}()
	<-got
	_, err := c.Exchange(shortCtx(t), uri, question("b.example.", dns.TypeA))
	if !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("Exchange waiting for a place = %v; want nm.ErrTimedOut", err)
	}
	if err := <-first; !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("Exchange with no reply = %v; want nm.ErrTimedOut", err)
	}
}

// TestClientDoHClosed: a DoH upstream that closes the connection with the
// query in flight: the caller gets a sentinel of nm, never a raw
// io.ErrUnexpectedEOF or an HTTP/2 internal error.
func TestClientDoHClosed(t *testing.T) {
	m := nmtest.Manager(t, 1)
	conf := serverTLS.Clone()
	conf.NextProtos = []string{"h2"}
	f := fakeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, conf)
		if tc.Handshake() != nil {
			return
		}
		buf := make([]byte, 100) // the preface and a little more
		io.ReadAtLeast(tc, buf, len(buf))
		tc.Close()
	})
	c := testClient(t, m, dnsmsg.ClientConfig{MaxFailures: -1})
	_, err := c.Exchange(longCtx(t), "https://"+f.addr+dnsmsg.DefaultPath, question("a.example.", dns.TypeA))
	if !errors.Is(err, nm.ErrEOF) && !errors.Is(err, nm.ErrConnReset) {
		t.Errorf("Exchange = %v; want nm.ErrEOF or nm.ErrConnReset", err)
	}
}

// TestClientDoHIdleClosed: a DoH upstream closes the Client's idle
// connection; the next query goes out on a fresh one.
func TestClientDoHIdleClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conf := serverTLS.Clone()
	conf.NextProtos = []string{"h2"}
	closed := make(chan struct{}, 4) // a token per connection the server closed
	srv := &http.Server{TLSConfig: conf, IdleTimeout: 50 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			q := new(dns.Msg)
			if q.Unpack(b) != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			reply, _ := new(dns.Msg).SetReply(q).Pack()
			w.Header().Set("Content-Type", "application/dns-message")
			w.Write(reply)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed <- struct{}{}
			}
		}}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(tls.NewListener(l, conf)) }()
	t.Cleanup(func() { srv.Close(); <-done })
	m := nmtest.Manager(t, 1)
	c := testClient(t, m, dnsmsg.ClientConfig{MaxConns: 1})
	uri := "https://" + l.Addr().String() + dnsmsg.DefaultPath
	for i := range 2 {
		q := question(fmt.Sprintf("idle%d.example.", i), dns.TypeTXT)
		r, err := c.Exchange(longCtx(t), uri, q)
		if err != nil || r.Id != q.Id {
			t.Fatalf("query %d: %v, %v", i, r, err)
		}
		if i == 0 {
			<-closed // the server closed the idle connection
		}
	}
}
