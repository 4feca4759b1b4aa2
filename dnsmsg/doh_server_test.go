package dnsmsg_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestDoHErrorStatuses sends every kind of bad request on one connection:
// each gets its status, and the connection goes on serving.
func TestDoHErrorStatuses(t *testing.T) {
	m := newManager(t, 2)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{MaxURI: 200 << 10, MaxHeaderBytes: 256 << 10})
	wait := nmtest.Serve(t, requests(l), asReply)
	hc := newHTTPClient(t)
	base := "https://" + l.Addr().String()
	uri := base + dnsmsg.DefaultPath
	q := queryID(t, "status.example", 1)
	response := append([]byte(nil), q...)
	dnsmsg.SetResponse(response)
	b64 := base64.RawURLEncoding.EncodeToString
	big := make([]byte, dnsmsg.MaxSize+1)
	copy(big, q)
	for _, tc := range []struct {
		name, method, uri, ct string
		body                  []byte
		want                  int
	}{
		{"get without dns", "GET", uri + "?other=1", "", nil, 400},
		{"get with empty dns", "GET", uri + "?dns=", "", nil, 400},
		{"get with dns twice", "GET", uri + "?dns=" + b64(q) + "&dns=" + b64(q), "", nil, 400},
		{"get not base64url", "GET", uri + "?dns=" + base64.StdEncoding.EncodeToString(append(q, 0xfb, 0xff)), "", nil, 400},
		{"get not a query", "GET", uri + "?dns=AAAA", "", nil, 400},
		{"get a response", "GET", uri + "?dns=" + b64(response), "", nil, 400},
		{"post empty", "POST", uri, dnsmsg.ContentType, []byte{}, 400},
		{"post not a query", "POST", uri, dnsmsg.ContentType, []byte("hello"), 400},
		{"unknown path", "GET", base + "/other?dns=" + b64(q), "", nil, 404},
		{"root path", "POST", base + "/", dnsmsg.ContentType, q, 404},
		{"put", "PUT", uri, dnsmsg.ContentType, q, 405},
		{"delete", "DELETE", uri, "", nil, 405},
		{"post too large", "POST", uri, dnsmsg.ContentType, big, 413},
		{"get too large", "GET", uri + "?dns=" + b64(big), "", nil, 413},
		{"uri too long", "GET", uri + "?dns=" + b64(q) + "&pad=" + longQuery(201<<10), "", nil, 414},
		{"post text", "POST", uri, "text/plain", q, 415},
		{"post without type", "POST", uri, "", q, 415},
		{"get ok", "GET", uri + "?dns=" + b64(q), "", nil, 200},
		{"get padded ok", "GET", uri + "?dns=" + base64.URLEncoding.EncodeToString(q), "", nil, 200},
		{"post ok", "POST", uri, dnsmsg.ContentType + "; charset=binary", q, 200},
	} {
		code, hdr, body := hc.do(t, tc.method, tc.uri, tc.ct, tc.body)
		if code != tc.want {
			t.Errorf("%s: status %d; want %d", tc.name, code, tc.want)
		}
		if tc.want == 405 && hdr.Get("Allow") != "GET, POST" {
			t.Errorf("%s: Allow %q; want %q", tc.name, hdr.Get("Allow"), "GET, POST")
		}
		if tc.want == 200 && (hdr.Get("Content-Type") != dnsmsg.ContentType || !dnsmsg.IsResponse(body) || dnsmsg.ID(body) != 1) {
			t.Errorf("%s: %q reply %x; want the query answered", tc.name, hdr.Get("Content-Type"), body)
		}
	}
	if hc.dials != 1 {
		t.Errorf("the client connected %d times; want 1: errors must keep the connection", hc.dials)
	}
	l.Close()
	if r := wait(); len(r.Data) != 3 {
		t.Errorf("server delivered %d requests; want 3", len(r.Data))
	}
	// Sent counts a reply once its write returned, which may be after the
	// client read it.
	if st := httpStatsSettle(m, func(st nm.Totals) bool { return st.Sent >= 3 }); st.Dropped != 17 || st.Sent != 3 {
		t.Errorf("HTTP stats %+v; want 17 dropped, 3 sent", st)
	}
}

// TestDoHHeaderTooLarge: a header list over MaxHeaderBytes gets 431 and
// the connection goes on. (One header field longer than the whole limit is
// an HPACK error that ends the connection, as x/net/http2 has it.)
func TestDoHHeaderTooLarge(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{MaxHeaderBytes: 4 << 10})
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	h := get(addr, dnsmsg.DefaultPath+"?dns=AAAA")
	for i := 0; i < 8; i++ {
		h = append(h, fmt.Sprintf("x-big-%d", i), longQuery(1<<10))
	}
	r.headers(1, true, h...)
	if got := r.closed(true, 1)[1]; got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d; want 431", got)
	}
	// The connection goes on.
	r.headers(3, true, get(addr, dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(queryID(t, "after.example", 1)))...)
	if got := r.closed(true, 3)[3]; got != http.StatusOK {
		t.Errorf("after the 431: status %d; want 200", got)
	}
	l.Close()
	wait()
}

func TestDoHCacheControl(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	withAnswers := func(ttls ...uint32) func([]byte) [][]byte {
		return func(req []byte) [][]byte {
			q, _ := dnsmsg.Parse(req)
			r := new(dns.Msg)
			r.SetReply(q)
			for _, ttl := range ttls {
				rr, _ := dns.NewRR("cache.example. 0 IN A 192.0.2.1")
				rr.Header().Ttl = ttl
				r.Answer = append(r.Answer, rr)
			}
			b, _ := r.Pack()
			return [][]byte{b}
		}
	}
	hc := newHTTPClient(t)
	for _, tc := range []struct {
		ttls []uint32
		want string
	}{
		{[]uint32{300, 60, 3600}, "max-age=60"},
		{[]uint32{86400}, "max-age=86400"},
		{nil, "no-cache"},
	} {
		go func() {
			ev := nmtest.Next(t, requests(l), nmtest.Timeout)
			ev.Handle.Send(withAnswers(tc.ttls...)(ev.Data)[0])
			ev.Handle.Detach()
		}()
		_, hdr, _ := hc.do(t, "POST", dohURI(l), dnsmsg.ContentType, queryID(t, "cache.example", 3))
		if got := hdr.Get("Cache-Control"); got != tc.want {
			t.Errorf("TTLs %v: Cache-Control %q; want %q", tc.ttls, got, tc.want)
		}
	}
}

func TestDoHSecondSendFails(t *testing.T) {
	forDoH(t, func(t *testing.T, k hkind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		c.Send(queryID(t, "twice.example", 5))
		req := nmtest.Next(t, requests(l), nmtest.Timeout)
		reply := append([]byte(nil), req.Data...)
		dnsmsg.SetResponse(reply)
		if err := req.Handle.Send(reply); err != nil {
			t.Fatalf("first send: %v", err)
		}
		if err := req.Handle.Send(reply); !errors.Is(err, nm.ErrClosed) {
			t.Errorf("second send: %v; want ErrClosed", err)
		}
		done := make(chan error, 1)
		if err := req.Handle.SendAsync(reply, done); !errors.Is(err, nm.ErrClosed) {
			t.Errorf("second SendAsync: %v; want ErrClosed", err)
		}
		req.Handle.Detach()
		if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil {
			t.Errorf("reply: %v", ev.Err)
		}
	})
}

// TestDoHClientResetReleasesEverything: the client gives up on a request;
// the stream is reset, its in-flight slot is free again, and a reply sent
// after fails.
func TestDoHClientResetReleasesEverything(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{MaxInFlight: 1})
	hc := newHTTPClient(t)
	get := func(ctx context.Context, id uint16) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", dohURI(l)+"?dns="+base64.RawURLEncoding.EncodeToString(queryID(t, "reset.example", id)), nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { errc <- get(ctx, 9) }()
	held := nmtest.Next(t, requests(l), nmtest.Timeout)
	cancel() // RST_STREAM
	if err := <-errc; err == nil {
		t.Fatal("canceled request succeeded")
	}
	// With one slot, the next request is delivered only once the reset
	// has freed it.
	go func() { errc <- get(context.Background(), 10) }()
	next := nmtest.Next(t, requests(l), nmtest.Timeout)
	reply := append([]byte(nil), held.Data...)
	dnsmsg.SetResponse(reply)
	if err := held.Handle.Send(reply); !errors.Is(err, nm.ErrCanceled) {
		t.Errorf("send after the reset: %v; want ErrCanceled", err)
	}
	held.Handle.Detach()
	reply = append(reply[:0], next.Data...)
	dnsmsg.SetResponse(reply)
	if err := next.Handle.Send(reply); err != nil {
		t.Errorf("send on the next request: %v", err)
	}
	next.Handle.Detach()
	if err := <-errc; err != nil {
		t.Errorf("the next request: %v", err)
	}
}

// TestDoHReleasedWithoutReplyResetsStream: a request whose handle goes
// without a reply has its stream reset; the client's Read says so and the
// Conn goes on.
func TestDoHReleasedWithoutReplyResetsStream(t *testing.T) {
	forDoH(t, func(t *testing.T, k hkind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		c.Send(queryID(t, "dropped.example", 11))
		nmtest.Next(t, requests(l), nmtest.Timeout).Handle.Detach()
		ev := nmtest.Next(t, c.Read(), nmtest.Timeout)
		var re *dnsmsg.RequestError
		if !errors.As(ev.Err, &re) || re.ID != 11 {
			t.Fatalf("read: %v; want a RequestError for query 11", ev.Err)
		}
		wait := nmtest.Serve(t, requests(l), asReply)
		if _, err := c.Exchange(context.Background(), query("next.example")); err != nil {
			t.Errorf("exchange after the reset: %v", err)
		}
		l.Close()
		wait()
	})
}

func TestDoHClientSeesErrorStatus(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	eps, _ := dnsmsg.NewEndpoints(0, "/other")
	l.SetEndpoints(eps)
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	_, err := c.Exchange(context.Background(), query("missing.example"))
	var re *dnsmsg.RequestError
	if !errors.As(err, &re) || re.Status != 404 {
		t.Errorf("exchange with an unknown path: %v; want a RequestError with status 404", err)
	}
}

func TestDoHReplaceEndpoints(t *testing.T) {
	m := newManager(t, 2)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	old := requests(l)
	hc := newHTTPClient(t)
	base := "https://" + l.Addr().String()
	q := queryID(t, "replace.example", 4)
	eps, err := dnsmsg.NewEndpoints(0, "/a", "/b/dns")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetEndpoints(eps); err != nil {
		t.Fatal(err)
	}
	nmtest.ExpectFinal(t, old, 0, nm.ErrCanceled)
	if err := l.SetEndpoints(eps); err == nil {
		t.Error("the same endpoints were accepted twice")
	}
	waitA := nmtest.Serve(t, eps.Requests("/a"), asReply)
	waitB := nmtest.Serve(t, eps.Requests("/b/dns"), asReply)
	for path, want := range map[string]int{"/a": 200, "/b/dns": 200, dnsmsg.DefaultPath: 404} {
		if code, _, _ := hc.do(t, "POST", base+path, dnsmsg.ContentType, q); code != want {
			t.Errorf("POST %s: status %d; want %d", path, code, want)
		}
	}
	l.Close()
	if a, b := waitA(), waitB(); len(a.Data) != 1 || len(b.Data) != 1 {
		t.Errorf("endpoints got %d and %d requests; want 1 each", len(a.Data), len(b.Data))
	}
	if _, err := dnsmsg.NewEndpoints(0, "no-slash"); err == nil {
		t.Error("NewEndpoints took a relative path")
	}
}

// TestDoHCleartextAndHTTP1: ListenHTTP serves HTTP/2 with prior knowledge
// and, with HTTP1, HTTP/1.1; without HTTP1, an HTTP/1.1 client is refused.
func TestDoHCleartextAndHTTP1(t *testing.T) {
	m := newManager(t, 2)
	for _, h1 := range []bool{true, false} {
		l, err := dnsmsg.ListenHTTP(context.Background(), m, "127.0.0.1:0", nil, dnsmsg.HTTPConfig{HTTP1: h1})
		if err != nil {
			t.Fatal(err)
		}
		wait := nmtest.Serve(t, requests(l), asReply)
		uri := "http://" + l.Addr().String() + dnsmsg.DefaultPath
		c, err := dnsmsg.DialHTTPS(context.Background(), m, uri, nil, dnsmsg.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exchange(context.Background(), query("h2c.example")); err != nil {
			t.Errorf("h2c exchange: %v", err)
		}
		c.Close()
		h1c := &http.Client{Transport: &http.Transport{}}
		resp, err := h1c.Post(uri, dnsmsg.ContentType, strings.NewReader(string(queryID(t, "h1.example", 2))))
		switch {
		case h1 && err != nil:
			t.Errorf("HTTP/1.1: %v", err)
		case h1:
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 1 || dnsmsg.ID(body) != 2 {
				t.Errorf("HTTP/1.1: %s %s, reply %x", resp.Proto, resp.Status, body)
			}
		case err == nil:
			resp.Body.Close()
			t.Errorf("HTTP/1.1 served without HTTPConfig.HTTP1: %s", resp.Status)
		}
		h1c.CloseIdleConnections()
		l.Close()
		wait()
	}
}

// TestDoHTLSHTTP1: over TLS, HTTP/1.1 is served when enabled and the client
// asks for it with ALPN; its reads and writes are counted, as HTTP/2's.
func TestDoHTLSHTTP1(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{HTTP1: true})
	wait := nmtest.Serve(t, requests(l), asReply)
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"http/1.1"}
	h1c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	defer h1c.CloseIdleConnections()
	for i := 0; i < 2; i++ {
		resp, err := h1c.Post(dohURI(l), dnsmsg.ContentType, strings.NewReader(string(queryID(t, "tls1.example", 6))))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 1 || dnsmsg.ID(body) != 6 {
			t.Errorf("%s reply %x; want HTTP/1.1 and the reply", resp.Proto, body)
		}
	}
	if st := m.Stats().Of(nm.HTTP); st.Reads < 2 || st.Writes < 2 {
		t.Errorf("HTTP/1.1: %d reads and %d writes counted for 2 requests answered; want at least 2 of each", st.Reads, st.Writes)
	}
	h1c.CloseIdleConnections()
	l.Close()
	wait()
}

// TestDoHShutdownWithRequestsPending: closing the manager while requests
// wait for replies ends every stream; the replies sent after fail.
func TestDoHShutdownWithRequestsPending(t *testing.T) {
	forDoH(t, func(t *testing.T, k hkind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		var held []nm.Event
		for i := 0; i < 5; i++ {
			c.Send(queryID(t, "pending.example", uint16(i)))
			held = append(held, nmtest.Next(t, requests(l), nmtest.Timeout))
		}
		read := c.Read()
		m.Close()
		for _, ev := range held {
			if err := ev.Handle.Send(asReply(ev.Data)[0]); err == nil {
				t.Error("a reply sent after Close succeeded")
			}
			ev.Handle.Detach()
		}
		nmtest.ExpectFinal(t, requests(l), 0, nm.ErrCanceled)
		nmtest.ExpectFinal(t, read, 0, nm.ErrCanceled)
	})
}

// TestDoHAcceptFilter: a connection the filter refuses is closed unseen.
func TestDoHAcceptFilter(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.HTTPConfig
	cfg.Stream.Accept = func(peer, local netip.AddrPort) error { return errors.New("no") }
	l := hkinds[0].listen(t, m, cfg)
	if _, err := hkinds[0].dialErr(m, l, dnsmsg.ClientConfig{}); err == nil {
		t.Error("dial through a refusing filter succeeded")
	}
	if st := m.Stats().Of(nm.HTTP); st.Dropped != 1 {
		t.Errorf("dropped %d; want 1", st.Dropped)
	}
}
