package dnsmsg_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// Peers that do not read: their replies and the output they provoke fill
// only their own connection's bounded output, never a consumer.

// heapPeak samples the heap until stop is called, which returns the
// largest growth seen over the heap at the start.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	quit, peak := make(chan struct{}), make(chan uint64, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond) // a sampling period, not a wait
		defer tick.Stop()
		var top uint64
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > top {
				top = ms.HeapAlloc - base
			}
			select {
			case <-quit:
				peak <- top
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(quit); return <-peak }
}

// dialSlowReader opens an HTTP/2 connection whose socket has a small
// receive buffer (the server's output soon waits for it) and whose frames
// are buffered in w (flush to send).
func dialSlowReader(t testing.TB, addr string) (*rawH2, *bufio.Writer) {
	t.Helper()
	d := net.Dialer{Control: smallRcvBuf}
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"h2"}
	tc, err := tls.DialWithDialer(&d, "tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	w := bufio.NewWriterSize(tc, 64<<10)
	r := &rawH2{t: t, conn: tc, fr: http2.NewFramer(w, tc)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	io.WriteString(w, http2.ClientPreface)
	r.fr.WriteSettings()
	return r, w
}

// send sends a request's header block on stream id, ending it.
func (r *rawH2) send(id uint32, kv ...string) error {
	r.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: true})
}

// goodClient exchanges queries with l until stop is closed, at least
// once; it returns the number answered, and fails the test on an error.
func goodClient(t *testing.T, m *nm.Manager, l *dnsmsg.HTTPListener, stop <-chan struct{}) (answered func() int) {
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	done := make(chan int, 1)
	go func() {
		n := 0
		for i := 0; i < 100_000; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
			_, err := c.Exchange(ctx, query("good.example"))
			cancel()
			if err != nil {
				t.Errorf("the good client, exchange %d: %v", i, err)
				break
			}
			n++
			select {
			case <-stop:
				done <- n
				return
			default:
			}
		}
		done <- n
	}()
	return func() int { return <-done }
}

// TestDoHFloodOfRefusedRequestsWithoutReading: a client that sends
// requests the server refuses (malformed ones, reset; unknown paths,
// answered 404) and never reads what comes back is cut off once its
// output passes HTTPConfig.MaxOutput, counted as a flood, long before the
// write timeout; the heap stays bounded meanwhile and a good client on the
// same listener is answered throughout.
func TestDoHFloodOfRefusedRequestsWithoutReading(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   func(addr string) []string
	}{
		{"reset", func(addr string) []string { return []string{":method", "GET", ":path", "/x"} }}, // no :scheme
		{"404", func(addr string) []string { return get(addr, "/") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, 2)
			var cfg dnsmsg.HTTPConfig
			const write = nmtest.Timeout
			cfg.Stream.Timeouts.Write = write
			l := hkinds[0].listen(t, m, cfg)
			wait := nmtest.Serve(t, requests(l), asReply)
			defer func() { l.Close(); wait() }()
			addr := l.Addr().String()
			peak := heapPeak()
			stop := make(chan struct{})
			answered := goodClient(t, m, l, stop)
			r, w := dialSlowReader(t, addr)
			start := time.Now()
			r.conn.SetWriteDeadline(start.Add(write))
			kv := tc.kv(addr)
			cut := false
			for id := uint32(1); id < 1<<31-1 && time.Since(start) < write; id += 2 {
				if r.send(id, kv...) != nil || (w.Buffered() > 32<<10 && w.Flush() != nil) {
					cut = true
					break
				}
			}
			took := time.Since(start)
			close(stop)
			grown := peak()
			if !cut || took > write/2 {
				t.Errorf("the flooding connection was cut off: %v, after %v; want true, well before the write timeout (%v)", cut, took, write)
			}
			if grown > 64<<20 {
				t.Errorf("the heap grew by %d MiB; want under 64 MiB", grown>>20)
			}
			if n := m.Stats().Of(nm.HTTP).Floods; n != 1 {
				t.Errorf("Floods = %d; want 1", n)
			}
			t.Logf("cut off after %v; heap peak +%d KiB; good client answered %d times", took, grown>>10, answered())
			stillServes(t, l)
		})
	}
}

// headersSeen reads frames until the server sent the response headers of
// each stream of ids.
func (r *rawH2) headersSeen(ids ...uint32) {
	r.t.Helper()
	open := map[uint32]bool{}
	for _, id := range ids {
		open[id] = true
	}
	for len(open) > 0 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("with %d streams waiting for headers: %v", len(open), err)
		}
		if _, ok := f.(*http2.HeadersFrame); ok {
			delete(open, f.Header().StreamID)
		}
	}
}

// TestDoHZeroWindowClientHoldsNoConsumer: a client that grants no
// flow-control window and keeps 2 queries open does not hold the one
// consumer goroutine (which replies with Send): another client on the same
// listener is answered at once meanwhile; the held replies' streams are
// reset at the write timeout, counted.
func TestDoHZeroWindowClientHoldsNoConsumer(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.HTTPConfig
	const write = 2 * time.Second
	cfg.Stream.Timeouts.Write = write
	l := hkinds[0].listen(t, m, cfg)
	wait := nmtest.Serve(t, requests(l), bigReply(100))
	defer func() { l.Close(); wait() }()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.headers(1, true, getQuery(t, addr, "zero.example", 1)...)
	r.headers(3, true, getQuery(t, addr, "zero.example", 2)...)
	r.headersSeen(1, 3) // both replies were sent: their bodies wait for window
	held := time.Now()
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	for i := 0; i < 5; i++ {
		if _, err := c.Exchange(context.Background(), query("good.example")); err != nil {
			t.Fatalf("the good client, exchange %d: %v", i, err)
		}
	}
	if d := time.Since(held); d >= write/2 {
		t.Errorf("the good client took %v for 5 exchanges; want far less than the write timeout (%v)", d, write)
	}
	r.closed(true, 1, 3)
	if d := time.Since(held); d < write*3/4 {
		t.Errorf("the held streams ended after %v; want the write timeout (%v)", d, write)
	}
	if n := m.Stats().Of(nm.HTTP).WriteTimeouts; n != 2 {
		t.Errorf("WriteTimeouts = %d; want 2", n)
	}
}

// pinged sends a PING and reads frames until its ACK: the server has
// handled every frame sent before it. It returns the statuses seen.
func (r *rawH2) pinged() map[uint32]int {
	r.t.Helper()
	statuses := map[uint32]int{}
	if err := r.fr.WritePing(false, [8]byte{7}); err != nil {
		r.t.Fatal(err)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() {
				return statuses
			}
		case *http2.HeadersFrame:
			fields, _ := r.dec.DecodeFull(f.HeaderBlockFragment())
			for _, hf := range fields {
				if hf.Name == ":status" {
					statuses[f.StreamID], _ = strconv.Atoi(hf.Value)
				}
			}
		}
	}
}

// postHeaders opens a POST stream declaring a body of clen bytes.
func postHeaders(r *rawH2, addr string, id uint32, clen int) {
	r.headers(id, false, ":method", "POST", ":scheme", "https", ":authority", addr, ":path", dnsmsg.DefaultPath,
		"content-type", dnsmsg.ContentType, "content-length", strconv.Itoa(clen))
}

// TestDoHBodyMemoryFollowsBytesReceived: streams that declare 65535-byte
// bodies and send one byte take memory for the byte, not the declaration
// (5 connections of 100 streams: 32 MiB if the declared length were
// allocated).
func TestDoHBodyMemoryFollowsBytesReceived(t *testing.T) {
	m := newManager(t, 2)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	addr := l.Addr().String()
	peak := heapPeak()
	for range 5 {
		r := dialRawH2(t, addr)
		for i := range 100 {
			id := uint32(2*i + 1)
			postHeaders(r, addr, id, 65535)
			r.fr.WriteData(id, false, []byte{0})
		}
		r.pinged()
	}
	grown := peak()
	if grown > 8<<20 {
		t.Errorf("500 streams of 1 byte grew the heap by %d KiB; want under 8 MiB", grown>>10)
	}
	t.Logf("heap peak +%d KiB for 500 streams", grown>>10)
	l.Close()
}

// TestDoHBodyCaps: past the connection's and the listener's caps on body
// bytes buffered, a stream is answered 413, counted TooLarge; the streams
// within the cap go on.
func TestDoHBodyCaps(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  dnsmsg.HTTPConfig
	}{
		{"connection", dnsmsg.HTTPConfig{MaxBodyBytes: 10_000}},
		{"listener", dnsmsg.HTTPConfig{MaxListenerBodyBytes: 10_000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, 1)
			l := hkinds[0].listen(t, m, tc.cfg)
			addr := l.Addr().String()
			r := dialRawH2(t, addr)
			chunk := make([]byte, 1000)
			for i := range 20 {
				id := uint32(2*i + 1)
				postHeaders(r, addr, id, 2000)
				r.fr.WriteData(id, false, chunk)
			}
			statuses := r.pinged()
			refused := 0
			for id, code := range statuses {
				if code != http.StatusRequestEntityTooLarge {
					t.Errorf("stream %d: status %d; want 413 or none", id, code)
				}
				refused++
			}
			if refused != 10 {
				t.Errorf("%d streams refused; want 10 (10 x 1000 bytes fit)", refused)
			}
			if n := m.Stats().Of(nm.HTTP).TooLarge; n != int64(refused) {
				t.Errorf("TooLarge = %d; want %d", n, refused)
			}
			l.Close()
		})
	}
}

// httpStatsSettle returns the HTTP counters once ok holds for them, or
// after nmtest.Timeout (a failure bound) as they are then.
func httpStatsSettle(m *nm.Manager, ok func(nm.Totals) bool) nm.Totals {
	deadline := time.Now().Add(nmtest.Timeout)
	for {
		st := m.Stats().Of(nm.HTTP)
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond) // polling a counter, not waiting for an event
	}
}

// TestDoHHTTP1ClientThatNeverReads: an HTTP/1.1 client that sends
// pipelined queries for large replies and never reads does not hold the
// one consumer (which replies with Send): another client is answered at
// once meanwhile, and the reader's connection is cut off at the write
// timeout, counted.
func TestDoHHTTP1ClientThatNeverReads(t *testing.T) {
	m := newManager(t, 1)
	cfg := dnsmsg.HTTPConfig{HTTP1: true}
	const write = 2 * time.Second
	cfg.Stream.Timeouts.Write = write
	l := hkinds[0].listen(t, m, cfg)
	wait := nmtest.Serve(t, requests(l), bigReply(60000)) // 150 of them overflow the kernel buffers
	defer func() { l.Close(); wait() }()
	addr := l.Addr().String()
	d := net.Dialer{Control: smallRcvBuf}
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"http/1.1"}
	tc, err := tls.DialWithDialer(&d, "tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var reqs []byte
	for i := range 150 {
		q := base64.RawURLEncoding.EncodeToString(queryID(t, "h1.example", uint16(i)))
		reqs = append(reqs, "GET "+dnsmsg.DefaultPath+"?dns="+q+" HTTP/1.1\r\nHost: x\r\n\r\n"...)
	}
	start := time.Now()
	if _, err := tc.Write(reqs); err != nil {
		t.Fatal(err)
	}
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
		_, err := c.Exchange(ctx, query("good.example"))
		cancel()
		if err != nil {
			t.Fatalf("the good client, exchange %d: %v", i, err)
		}
	}
	if d := time.Since(start); d >= write/2 {
		t.Errorf("the good client took %v for 5 exchanges; want far less than the write timeout (%v)", d, write)
	}
	st := httpStatsSettle(m, func(st nm.Totals) bool { return st.WriteTimeouts > 0 })
	if d := time.Since(start); st.WriteTimeouts != 1 || d < write*3/4 {
		t.Errorf("WriteTimeouts = %d after %v; want 1 at the write timeout (%v)", st.WriteTimeouts, d, write)
	}
}

// TestDoHShedding: when the consumer falls behind and an endpoint's
// channel is full, further requests are answered ShedStatus at once,
// counted Shed, over HTTP/2 and HTTP/1.1; the queued ones are delivered.
func TestDoHShedding(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{Queue: 2, ShedStatus: http.StatusTooManyRequests, HTTP1: true})
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	for i := range 5 {
		r.headers(uint32(2*i+1), true, getQuery(t, addr, "shed.example", uint16(i))...)
	}
	for id, code := range r.closed(true, 5, 7, 9) {
		if code != http.StatusTooManyRequests {
			t.Errorf("stream %d: status %d; want 429", id, code)
		}
	}
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"http/1.1"}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + addr + dnsmsg.DefaultPath + "?dns=" + base64.RawURLEncoding.EncodeToString(queryID(t, "shed.example", 9)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("HTTP/1.1: status %d; want 429", resp.StatusCode)
	}
	if n := m.Stats().Of(nm.HTTP).Shed; n != 4 {
		t.Errorf("Shed = %d; want 4", n)
	}
	wait := nmtest.Serve(t, requests(l), asReply)
	if got := r.closed(true, 1, 3); got[1] != http.StatusOK || got[3] != http.StatusOK {
		t.Errorf("the queued requests: %v; want 200 each", got)
	}
	l.Close()
	wait()
}

// TestDoHReplyPastOutputBound: replies held back by a client that grants
// no window count toward the connection's output bound; the reply that
// passes it fails with nm.ErrOutputFull and the connection is cut off,
// counted OutputFull.
func TestDoHReplyPastOutputBound(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{MaxOutput: 4096})
	defer l.Close()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.headers(1, true, getQuery(t, addr, "held.example", 1)...)
	r.headers(3, true, getQuery(t, addr, "held.example", 2)...)
	first := nmtest.Next(t, requests(l), nmtest.Timeout)
	second := nmtest.Next(t, requests(l), nmtest.Timeout)
	if err := first.Handle.Send(bigReply(3000)(first.Data)[0]); err != nil {
		t.Errorf("the first reply (within the bound): %v", err)
	}
	first.Handle.Detach()
	if err := second.Handle.Send(bigReply(3000)(second.Data)[0]); !errors.Is(err, nm.ErrOutputFull) {
		t.Errorf("the reply past the bound: %v; want %v", err, nm.ErrOutputFull)
	}
	second.Handle.Detach()
	if !r.ended(nmtest.Timeout) {
		t.Error("the connection was kept")
	}
	if n := m.Stats().Of(nm.HTTP).OutputFull; n != 1 {
		t.Errorf("OutputFull = %d; want 1", n)
	}
}

// h1Post opens an HTTP/1.1 connection and sends the headers of a POST
// declaring clen bytes, then body (the rest never comes).
func h1Post(t *testing.T, addr string, clen int, body []byte) net.Conn {
	t.Helper()
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := "POST " + dnsmsg.DefaultPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: " + dnsmsg.ContentType +
		"\r\nContent-Length: " + strconv.Itoa(clen) + "\r\n\r\n"
	if _, err := c.Write(append([]byte(head), body...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDoHHTTP1BodyMemory: HTTP/1.1 POSTs declaring 65535 bytes and
// sending one take memory for what came, not for the declaration (200 of
// them: 12.5 MiB if the declared length were allocated, besides what
// net/http takes per connection); past the listener's cap on body bytes,
// a POST is refused, counted TooLarge.
func TestDoHHTTP1BodyMemory(t *testing.T) {
	m := newManager(t, 2)
	cfg := dnsmsg.HTTPConfig{HTTP1: true, MaxListenerBodyBytes: 10_000}
	l := hkinds[0].listen(t, m, cfg)
	defer l.Close()
	addr := l.Addr().String()
	peak := heapPeak()
	const n = 200
	for range n {
		h1Post(t, addr, 65535, []byte{0})
	}
	// 10 POSTs of 1000 bytes: the last to be read passes the cap.
	for range 10 {
		h1Post(t, addr, 2000, make([]byte, 1000))
	}
	st := httpStatsSettle(m, func(st nm.Totals) bool { return st.TooLarge > 0 })
	grown := peak()
	if grown > 16<<20 {
		t.Errorf("%d POSTs of 1 byte grew the heap by %d KiB; want under 16 MiB", n, grown>>10)
	}
	t.Logf("heap peak +%d KiB for %d POSTs", grown>>10, n)
	if st.TooLarge != 1 {
		t.Errorf("TooLarge = %d; want 1 (the POST that passed the listener's cap)", st.TooLarge)
	}
}
