package dnsmsg_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// handlerKinds are the transports a Handler serves: UDP, TCP, DoT, DoH.
var handlerKinds = []string{"udp", "tcp", "dot", "doh"}

// served is a listener with Serve running on it.
type served struct {
	addr     string
	exchange func(t *testing.T, q *dns.Msg) (*dns.Msg, error)
	done     chan error // Serve's result
	close    func()
}

// serveKind listens on kind with Serve running h, and returns how to ask it.
func serveKind(t *testing.T, m *nm.Manager, kind string, h dnsmsg.Handler) *served {
	t.Helper()
	var reqs <-chan nm.Event
	s := &served{done: make(chan error, 1)}
	switch kind {
	case "udp", "tcp", "dot":
		var l *dnsmsg.Listener
		var err error
		switch kind {
		case "udp":
			l, err = dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
		case "tcp":
			l, err = dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
		default:
			l, err = dnsmsg.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, dnsmsg.ServerConfig{})
		}
		if err != nil {
			t.Fatal(err)
		}
		reqs, s.addr, s.close = l.Requests(), l.Addr().String(), func() { l.Close() }
		s.exchange = func(t *testing.T, q *dns.Msg) (*dns.Msg, error) {
			c := dialKind(t, m, kind, s.addr)
			ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
			defer cancel()
			return c.Exchange(ctx, q)
		}
	case "doh":
		l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
		reqs, s.addr, s.close = requests(l), dohURI(l), func() { l.Close() }
		s.exchange = func(t *testing.T, q *dns.Msg) (*dns.Msg, error) {
			c := hkinds[0].dial(t, m, l, dnsmsg.ClientConfig{})
			ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
			defer cancel()
			return c.Exchange(ctx, q)
		}
	}
	go func() { s.done <- dnsmsg.Serve(context.Background(), reqs, h, dnsmsg.ServeConfig{Workers: 4}) }()
	t.Cleanup(func() {
		s.close()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("Serve = %v; want nil after Close", err)
			}
		case <-time.After(nmtest.Timeout):
			t.Errorf("Serve did not return after the listener closed")
		}
	})
	return s
}

func dialKind(t *testing.T, m *nm.Manager, kind, addr string) *dnsmsg.Conn {
	t.Helper()
	var c *dnsmsg.Conn
	var err error
	ctx := context.Background()
	cfg := dnsmsg.ClientConfig{ReadTimeout: nmtest.Timeout}
	switch kind {
	case "udp":
		c, err = dnsmsg.DialUDP(ctx, m, addr, cfg)
	case "tcp":
		c, err = dnsmsg.DialTCP(ctx, m, addr, cfg)
	case "dot":
		c, err = dnsmsg.DialTLS(ctx, m, addr, clientTLS, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func forHandlerKinds(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, k := range handlerKinds {
		t.Run(k, func(t *testing.T) { fn(t, k) })
	}
}

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return q
}

// A handler answers on every transport; the request says which transport
// and addresses it came over.
func TestServeAnswers(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 2)
		s := serveKind(t, m, kind, dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			q, err := r.Msg()
			if err != nil {
				t.Errorf("Msg: %v", err)
				return
			}
			a := new(dns.Msg).SetReply(q)
			a.Answer = append(a.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{r.Transport().String(), r.PeerAddr().Addr().String(), r.LocalAddr().Addr().String()},
			})
			if err := r.Reply(a); err != nil {
				t.Errorf("Reply: %v", err)
			}
		}))
		r, err := s.exchange(t, question("who.example.", dns.TypeTXT))
		if err != nil {
			t.Fatal(err)
		}
		txt := r.Answer[0].(*dns.TXT).Txt
		want := map[string]string{"udp": "udp", "tcp": "tcp", "dot": "tls", "doh": "http"}[kind]
		if txt[0] != want || txt[1] != "127.0.0.1" || txt[2] != "127.0.0.1" {
			t.Errorf("request seen as %q; want transport %s from and to 127.0.0.1", txt, want)
		}
	})
}

// A panicking handler answers SERVFAIL, is counted, and the server goes on.
func TestServePanicAnswersServfail(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 1)
		s := serveKind(t, m, kind, dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			q, _ := r.Msg()
			if q.Question[0].Name == "boom.example." {
				panic("handler bug")
			}
			r.Reply(new(dns.Msg).SetReply(q))
		}))
		r, err := s.exchange(t, question("boom.example.", dns.TypeA))
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeServerFailure || len(r.Question) != 1 || r.Question[0].Name != "boom.example." {
			t.Errorf("after a panic: rcode %s, question %v; want SERVFAIL for boom.example.", dns.RcodeToString[r.Rcode], r.Question)
		}
		if r, err := s.exchange(t, question("fine.example.", dns.TypeA)); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("the query after the panic: %v, %v", r, err)
		}
		var panics int64
		for _, tr := range []nm.Transport{nm.UDP, nm.TCP, nm.TLS, nm.HTTP} {
			panics += m.Stats().Of(tr).Panics
		}
		if panics != 1 {
			t.Errorf("%d panics counted; want 1", panics)
		}
	})
}

// A request that does not parse is answered FORMERR when the handler does
// not answer it.
func TestServeFormerr(t *testing.T) {
	m := nmtest.Manager(t, 1)
	s := serveKind(t, m, "udp", dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		if _, err := r.Msg(); !errors.Is(err, nm.ErrBadMessage) {
			t.Errorf("Msg of a broken request: %v; want nm.ErrBadMessage", err)
		}
	}))
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A header with one question, then a label longer than what follows.
	bad := []byte{0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 40, 'x', 'y', 'z', 0, 0, 1}
	c.Write(bad)
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if r.Id != 0xabcd || !r.Response || r.Rcode != dns.RcodeFormatError || !r.RecursionDesired {
		t.Errorf("reply %v; want FORMERR with ID abcd, RD kept", &r)
	}
}

// A request kept past its handler's return fails loudly every time: a late
// reply cannot reach anybody, even once the server has handled other
// clients since.
func TestRequestUseAfterReturn(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 1)
		kept := make(chan *dnsmsg.Request, 4)
		s := serveKind(t, m, kind, dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			q, _ := r.Msg()
			r.Reply(new(dns.Msg).SetReply(q))
			kept <- r
		}))
		for _, name := range []string{"a.example.", "b.example.", "c.example."} {
			if _, err := s.exchange(t, question(name, dns.TypeA)); err != nil {
				t.Fatal(err)
			}
		}
		old := <-kept
		<-kept
		<-kept
		if err := old.ReplyWire(make([]byte, 12)); !errors.Is(err, nm.ErrReleased) {
			t.Errorf("ReplyWire after return: %v; want nm.ErrReleased", err)
		}
		if err := old.Reply(new(dns.Msg)); !errors.Is(err, nm.ErrReleased) {
			t.Errorf("Reply after return: %v; want nm.ErrReleased", err)
		}
		if _, err := old.Msg(); !errors.Is(err, nm.ErrReleased) {
			t.Errorf("Msg after return: %v; want nm.ErrReleased", err)
		}
		if old.Context().Err() == nil {
			t.Error("the context of a returned request has not ended")
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Wire after return did not panic")
				}
			}()
			old.Wire()
		}()
	})
}

// Over UDP and DoH a request takes one reply; over TCP and DoT several
// (a zone transfer).
func TestRequestReplies(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 1)
		second := make(chan error, 1)
		s := serveKind(t, m, kind, dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			q, _ := r.Msg()
			r.Reply(new(dns.Msg).SetReply(q))
			second <- r.Reply(new(dns.Msg).SetReply(q))
		}))
		if _, err := s.exchange(t, question("x.example.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		err := <-second
		if multi := kind == "tcp" || kind == "dot"; multi && err != nil {
			t.Errorf("second reply over %s: %v; want nil", kind, err)
		} else if !multi && !errors.Is(err, nm.ErrClosed) {
			t.Errorf("second reply over %s: %v; want nm.ErrClosed", kind, err)
		}
	})
}

// Over UDP, Reply truncates what the client cannot take.
func TestReplyTruncatesUDP(t *testing.T) {
	m := nmtest.Manager(t, 1)
	s := serveKind(t, m, "udp", dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		q, _ := r.Msg()
		a := new(dns.Msg).SetReply(q)
		for i := range 100 {
			a.Answer = append(a.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i)),
			})
		}
		r.Reply(a)
	}))
	r, err := s.exchange(t, question("big.example.", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true // as it was packed
	if !r.Truncated || r.Len() > dns.MinMsgSize || len(r.Answer) == 0 {
		t.Errorf("reply of %d bytes, %d answers, TC %v; want some answers in at most 512 bytes, TC set", r.Len(), len(r.Answer), r.Truncated)
	}
}

// The request's context ends when its handler returns.
func TestRequestContext(t *testing.T) {
	m := nmtest.Manager(t, 1)
	ctxs := make(chan context.Context, 1)
	s := serveKind(t, m, "tcp", dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		ctx := r.Context()
		if ctx.Err() != nil {
			t.Errorf("context ended in the handler: %v", ctx.Err())
		}
		q, _ := r.Msg()
		r.Reply(new(dns.Msg).SetReply(q))
		ctxs <- ctx
	}))
	if _, err := s.exchange(t, question("x.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-(<-ctxs).Done():
	case <-time.After(nmtest.Timeout):
		t.Fatal("the request's context did not end after its handler returned")
	}
}

// A miekg/dns handler serves unchanged on every transport: a ServeMux with
// a zone, and a zone transfer of several messages over TCP.
func TestMiekgHandler(t *testing.T) {
	mux := dns.NewServeMux()
	mux.HandleFunc("example.org.", func(w dns.ResponseWriter, q *dns.Msg) {
		a := new(dns.Msg).SetReply(q)
		a.Answer = append(a.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{w.RemoteAddr().Network(), w.RemoteAddr().String()},
		})
		w.WriteMsg(a)
	})
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 1)
		s := serveKind(t, m, kind, dnsmsg.MiekgHandler(mux))
		r, err := s.exchange(t, question("www.example.org.", dns.TypeTXT))
		if err != nil {
			t.Fatal(err)
		}
		txt := r.Answer[0].(*dns.TXT).Txt
		wantNet := map[bool]string{true: "udp", false: "tcp"}[kind == "udp"]
		if ap, err := netip.ParseAddrPort(txt[1]); txt[0] != wantNet || err != nil || ap.Addr().String() != "127.0.0.1" {
			t.Errorf("RemoteAddr seen as %q; want a %s address on 127.0.0.1", txt, wantNet)
		}
		// No zone: the mux answers REFUSED (miekg/dns's HandleFailed).
		if r, err := s.exchange(t, question("other.test.", dns.TypeA)); err != nil || r.Rcode != dns.RcodeRefused {
			t.Errorf("outside the zone: %v, %v; want REFUSED", r, err)
		}
	})
}

// A zone transfer through the miekg/dns adapter: every message of it
// reaches a TCP client, in order.
func TestMiekgHandlerTransfer(t *testing.T) {
	const msgs = 5
	mux := dns.NewServeMux()
	mux.HandleFunc("example.org.", func(w dns.ResponseWriter, q *dns.Msg) {
		for i := range msgs {
			a := new(dns.Msg).SetReply(q)
			a.Answer = append(a.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i)),
			})
			if err := w.WriteMsg(a); err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		}
	})
	m := nmtest.Manager(t, 1)
	s := serveKind(t, m, "tcp", dnsmsg.MiekgHandler(mux))
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, _ := question("example.org.", dns.TypeAXFR).Pack()
	c.Write(frame(q))
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	for i := range msgs {
		var r dns.Msg
		if err := r.Unpack(readFrame(t, c)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if a := r.Answer[0].(*dns.A).A; !a.Equal(net.IPv4(192, 0, 2, byte(i))) {
			t.Errorf("message %d carries %v", i, a)
		}
	}
}
