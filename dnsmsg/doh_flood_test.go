package dnsmsg_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// Defences against HTTP/2 floods. Each test attacks one connection and
// then checks that the server is still there for everyone else.

// stillServes checks that a new client is answered. While the consumer
// still works through the requests an attack delivered, the listener
// sheds with 503: the client asks again, as clients do, within a bound.
func stillServes(t *testing.T, l *dnsmsg.HTTPListener) {
	t.Helper()
	m := newManager(t, 1)
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	deadline := time.Now().Add(nmtest.Timeout)
	for {
		_, err := c.Exchange(context.Background(), query("after.example"))
		var re *dnsmsg.RequestError
		if errors.As(err, &re) && re.Status == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the backlog drains; bounded above
			continue
		}
		if err != nil {
			t.Errorf("a client after the attack: %v", err)
		}
		return
	}
}

// goroutinesSettle waits until the goroutines are back to at most n more
// than before; the deadline only bounds a failure.
func goroutinesSettle(t *testing.T, before, n int) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for runtime.NumGoroutine() > before+n {
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines, %d before the attack", runtime.NumGoroutine(), before)
			return
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a count, not waiting for an event
	}
}

// TestDoHRapidReset: a client opens streams and resets them at once
// (CVE-2023-44487). The server's work stays bounded: every request it
// delivers is released, goroutines settle, and other clients are served.
func TestDoHRapidReset(t *testing.T) {
	m := newManager(t, 2)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	before := runtime.NumGoroutine()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	go func() { r.ended(nmtest.Timeout) }() // read, so that our writes go on
	h := get(addr, dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(queryID(t, "reset.example", 1)))
	const storm = 20000
	id, sent := uint32(1), 0
	for ; sent < storm; sent++ {
		r.headers(id, true, h...)
		if r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the server cut us off: also a defence
		}
		id += 2
	}
	t.Logf("%d streams opened and reset before the server stopped reading or the storm ended", sent)
	r.conn.Close()
	stillServes(t, l)
	goroutinesSettle(t, before, 30)
	l.Close()
	res := wait()
	if len(res.Data) > sent+1 {
		t.Errorf("%d requests delivered from %d streams", len(res.Data), sent)
	}
	t.Logf("%d of them delivered", len(res.Data))
}

// TestDoHStreamsWithoutRequest: streams opened with headers but no body
// are answered 408 once the initial timeout passes, and free their places
// for new streams.
func TestDoHStreamsWithoutRequest(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.HTTPConfig
	cfg.MaxStreams = 10
	cfg.Stream.Timeouts.Initial = 200 * time.Millisecond
	l := hkinds[0].listen(t, m, cfg)
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	post := []string{":method", "POST", ":scheme", "https", ":authority", addr, ":path", dnsmsg.DefaultPath, "content-type", dnsmsg.ContentType}
	var ids []uint32
	for id := uint32(1); id < 20; id += 2 {
		r.headers(id, false, post...)
		ids = append(ids, id)
	}
	for id, status := range r.closed(false, ids...) {
		if status != http.StatusRequestTimeout {
			t.Errorf("stream %d: status %d; want 408", id, status)
		}
	}
	// Their places are free again.
	r.headers(21, true, get(addr, dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(queryID(t, "later.example", 2)))...)
	if got := r.closed(true, 21)[21]; got != http.StatusOK {
		t.Errorf("a request after them: status %d; want 200", got)
	}
	l.Close()
	wait()
}

// flood writes frames with write until the server cuts the connection off
// or n were written, and checks that it was cut off.
func flood(t *testing.T, r *rawH2, n int, write func(i int) error) {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- r.ended(nmtest.Timeout) }()
	r.conn.SetWriteDeadline(time.Now().Add(nmtest.Timeout))
	for i := 0; i < n; i++ {
		if write(i) != nil {
			break
		}
	}
	if !<-done {
		t.Error("the server kept the flooding connection")
	}
}

// TestDoHPingFlood: PINGs from a client that does not read their ACKs pile
// up on the server until it drops the connection.
func TestDoHPingFlood(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	defer func() { l.Close(); wait() }()
	r, w := dialSlowReader(t, l.Addr().String())
	r.conn.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	// Not reading while flooding: the ACKs queue up on the server.
	r.conn.SetWriteDeadline(time.Now().Add(nmtest.Timeout))
	for i := 0; i < 2_000_000; i++ {
		if r.fr.WritePing(false, [8]byte{byte(i)}) != nil || (w.Buffered() > 32<<10 && w.Flush() != nil) {
			break
		}
	}
	if n := m.Stats().Of(nm.HTTP).Floods; n != 1 {
		t.Errorf("Floods = %d; want 1", n)
	}
	if !r.ended(nmtest.Timeout) {
		t.Error("the server kept the flooding connection")
	}
	stillServes(t, l)
}

// TestDoHSettingsFlood: SETTINGS frames cost the server next to nothing
// (their ACKs are coalesced): while one client floods them without
// reading, others are served, and the goroutines stay bounded.
func TestDoHSettingsFlood(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	defer func() { l.Close(); wait() }()
	before := runtime.NumGoroutine()
	r := dialRawH2(t, l.Addr().String())
	r.conn.SetWriteDeadline(time.Now().Add(nmtest.Timeout))
	stop := make(chan struct{})
	flooded := make(chan int, 1)
	go func() {
		n := 0
		for ; n < 1_000_000; n++ {
			select {
			case <-stop:
				flooded <- n
				return
			default:
			}
			if r.fr.WriteSettings() != nil {
				break
			}
		}
		flooded <- n
	}()
	stillServes(t, l)
	close(stop)
	if n := <-flooded; n == 0 {
		t.Error("no SETTINGS frame was written")
	}
	r.conn.Close()
	goroutinesSettle(t, before, 30)
}

// TestDoHContinuationFlood: a header block that never ends (CONTINUATION
// frames without END_HEADERS, CVE-2023-45288) ends the connection once it
// outgrows the header limit.
func TestDoHContinuationFlood(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	defer func() { l.Close(); wait() }()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.hbuf.Reset()
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: false})
	junk := make([]byte, 16<<10)
	flood(t, r, 100_000, func(int) error { return r.fr.WriteContinuation(1, false, junk) })
	stillServes(t, l)
}

// TestDoHBodyLargerThanDeclared: a POST whose DATA outgrows its
// content-length is reset, nothing is delivered, and the connection goes
// on.
func TestDoHBodyLargerThanDeclared(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	q := queryID(t, "declared.example", 1)
	r.headers(1, false, ":method", "POST", ":scheme", "https", ":authority", addr, ":path", dnsmsg.DefaultPath,
		"content-type", dnsmsg.ContentType, "content-length", "12")
	r.fr.WriteData(1, true, q) // longer than 12
	if got := r.closed(true, 1)[1]; got == http.StatusOK {
		t.Errorf("a body longer than declared was answered %d", got)
	}
	r.headers(3, true, get(addr, dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(q))...)
	if got := r.closed(true, 3)[3]; got != http.StatusOK {
		t.Errorf("the next request: status %d; want 200", got)
	}
	l.Close()
	if res := wait(); len(res.Data) != 1 {
		t.Errorf("delivered %d requests; want only the good one", len(res.Data))
	}
}
