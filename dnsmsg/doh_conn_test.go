package dnsmsg_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// The HTTP/2 connection loop of DoH listeners: flow control, records,
// timeouts and malformed requests, seen from a raw HTTP/2 client.

// bigReply answers a query with itself as a response, padded to n bytes.
func bigReply(n int) func(req []byte) [][]byte {
	return func(req []byte) [][]byte {
		b := make([]byte, n)
		copy(b, req)
		dnsmsg.SetResponse(b)
		return [][]byte{b}
	}
}

func getQuery(t testing.TB, addr, name string, id uint16) []string {
	return get(addr, dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(queryID(t, name, id)))
}

// TestDoHReplyFollowsFlowControl: a client with a 16-byte stream window
// gets a 3000-byte reply in frames no larger than the window it granted,
// each after its WINDOW_UPDATE, and whole.
func TestDoHReplyFollowsFlowControl(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), bigReply(3000))
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	const window = 16
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	r.headers(1, true, getQuery(t, addr, "window.example", 1)...)
	var body []byte
	status := 0
	for ended := false; !ended; {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(body), err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, err := r.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" && hf.Value == "200" {
					status = 200
				}
			}
		case *http2.DataFrame:
			if n := len(f.Data()); n > window {
				t.Fatalf("a DATA frame of %d bytes with a window of %d", n, window)
			}
			body = append(body, f.Data()...)
			ended = f.StreamEnded()
			if !ended {
				r.fr.WriteWindowUpdate(1, uint32(len(f.Data())))
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v after %d bytes", f, len(body))
		}
	}
	if status != 200 || len(body) != 3000 {
		t.Errorf("status %d, %d bytes; want 200 and 3000", status, len(body))
	}
	l.Close()
	wait()
}

// sendAsyncAll answers every request on l with a reply of n bytes sent
// with SendAsync, whose outcomes go to sent; it returns once the final
// event came.
func sendAsyncAll(t *testing.T, l *dnsmsg.HTTPListener, n int, sent chan error) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range requests(l) {
			if ev.Err != nil {
				continue
			}
			if err := ev.Handle.SendAsync(bigReply(n)(ev.Data)[0], sent); err != nil {
				sent <- err
			}
			ev.Handle.Detach()
		}
	}()
	return func() { <-done }
}

// TestDoHReplyStalledByWindow: a client that never opens its window gets
// its stream reset once the write timeout passes; the reply's SendAsync
// completes with nm.ErrTimedOut, counted as a write timeout.
func TestDoHReplyStalledByWindow(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.HTTPConfig
	cfg.Stream.Timeouts.Write = 200 * time.Millisecond
	l := hkinds[0].listen(t, m, cfg)
	sent := make(chan error, 1)
	wait := sendAsyncAll(t, l, 100, sent)
	defer func() { l.Close(); wait() }()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.headers(1, true, getQuery(t, addr, "stalled.example", 1)...)
	if got := r.closed(true, 1)[1]; got != http.StatusOK {
		t.Errorf("status %d before the reset; want 200 (headers need no window)", got)
	}
	select {
	case err := <-sent:
		if !errors.Is(err, nm.ErrTimedOut) {
			t.Errorf("SendAsync: %v; want %v", err, nm.ErrTimedOut)
		}
	case <-time.After(nmtest.Timeout):
		t.Fatal("the reply's outcome never came")
	}
	if n := m.Stats().Of(nm.HTTP).WriteTimeouts; n != 1 {
		t.Errorf("WriteTimeouts = %d; want 1", n)
	}
	l.Close()
}

// TestDoHEachReplyEndsItsRecord: with 50 requests in flight on one TLS
// connection, no TLS record holds the end of two streams (dnsperf reads a
// record at a time and keeps one reply of each). A crypto/tls Read returns
// the data of one record at most.
func TestDoHEachReplyEndsItsRecord(t *testing.T) {
	m := newManager(t, 2)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	const n = 50
	// The replies go out together, as SendAsync in a row, so that the
	// server has several of them to write at once.
	served := make(chan int, 1)
	go func() {
		var held []nm.Event
		for ev := range requests(l) {
			if ev.Err != nil {
				continue
			}
			if held = append(held, ev); len(held) == n {
				done := make(chan error, n)
				for _, ev := range held {
					if err := ev.Handle.SendAsync(asReply(ev.Data)[0], done); err != nil {
						t.Error(err)
						done <- err
					}
				}
				for range held {
					<-done
				}
				for _, ev := range held {
					ev.Handle.Detach()
				}
			}
		}
		served <- len(held)
	}()
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	for i := 0; i < n; i++ {
		r.headers(uint32(2*i+1), true, getQuery(t, addr, "record.example", uint16(i))...)
	}
	var pending []byte
	ends := 0
	buf := make([]byte, 64<<10)
	for ends < n {
		k, err := r.conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d replies: %v", ends, err)
		}
		pending = append(pending, buf[:k]...)
		inRecord := 0
		for len(pending) >= 9 {
			size := int(pending[0])<<16 | int(pending[1])<<8 | int(pending[2])
			if len(pending) < 9+size {
				break
			}
			typ, flags := http2.FrameType(pending[3]), http2.Flags(pending[4])
			if (typ == http2.FrameData || typ == http2.FrameHeaders) && flags.Has(http2.FlagDataEndStream) {
				inRecord++
			}
			pending = pending[9+size:]
		}
		if inRecord > 1 {
			t.Fatalf("one TLS record ends %d streams", inRecord)
		}
		ends += inRecord
	}
	l.Close()
	if got := <-served; got != n {
		t.Errorf("%d requests delivered; want %d", got, n)
	}
}

// TestDoHConnectionTimeouts: a connection that sends no request is closed
// once the initial timeout has passed, and one whose requests are all
// answered once the idle timeout has; never before.
func TestDoHConnectionTimeouts(t *testing.T) {
	m := newManager(t, 1)
	var cfg dnsmsg.HTTPConfig
	cfg.Stream.Timeouts.Initial = 200 * time.Millisecond
	cfg.Stream.Timeouts.Idle = 400 * time.Millisecond
	l := hkinds[0].listen(t, m, cfg)
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()

	start := time.Now()
	silent := dialRawH2(t, addr)
	if !silent.ended(nmtest.Timeout) {
		t.Fatal("a connection without a request was kept")
	}
	if d := time.Since(start); d < cfg.Stream.Timeouts.Initial {
		t.Errorf("closed after %v, before the initial timeout", d)
	}

	r := dialRawH2(t, addr)
	r.headers(1, true, getQuery(t, addr, "idle.example", 1)...)
	if got := r.closed(true, 1)[1]; got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	answered := time.Now()
	if !r.ended(nmtest.Timeout) {
		t.Fatal("an idle connection was kept")
	}
	if d := time.Since(answered); d < cfg.Stream.Timeouts.Idle {
		t.Errorf("closed %v after its last reply, before the idle timeout", d)
	}
	l.Close()
	wait()
}

// TestDoHMalformedRequests: requests that break HTTP/2's rules for header
// fields are reset with PROTOCOL_ERROR, are not delivered, and the
// connection goes on serving.
func TestDoHMalformedRequests(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	good := getQuery(t, addr, "malformed.example", 1)
	cases := map[string][]string{
		"uppercase name":       append(append([]string{}, good...), "X-Upper", "1"),
		"no :path":             good[:6],
		"no :method":           good[2:],
		"unknown pseudo-field": append(append([]string{}, good...)[:8:8], ":protocol", "dns"),
		"pseudo after regular": append([]string{"accept", "*/*"}, good...),
		"connection header":    append(append([]string{}, good...), "connection", "keep-alive"),
		"te not trailers":      append(append([]string{}, good...), "te", "gzip"),
		"empty :path":          {":method", "GET", ":scheme", "https", ":path", ""},
	}
	id := uint32(1)
	for name, h := range cases {
		r.headers(id, true, h...)
		if got, ok := r.closed(true, id)[id]; !ok || got != 0 {
			t.Errorf("%s: status %d; want a reset", name, got)
		}
		id += 2
	}
	r.headers(id, true, good...)
	if got := r.closed(true, id)[id]; got != http.StatusOK {
		t.Errorf("a good request after them: status %d", got)
	}
	l.Close()
	if res := wait(); len(res.Data) != 1 {
		t.Errorf("%d requests delivered; want 1", len(res.Data))
	}
}

// TestDoHRequestShapes: a GET whose client side ends with an empty DATA
// frame, a POST in several DATA frames, and one ended by a trailer block
// are answered; a trailer block with a pseudo-field resets its stream.
func TestDoHRequestShapes(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	addr := l.Addr().String()
	r := dialRawH2(t, addr)

	r.headers(1, false, getQuery(t, addr, "open.example", 1)...)
	r.fr.WriteData(1, true, nil)
	if got := r.closed(true, 1)[1]; got != http.StatusOK {
		t.Errorf("GET ended by DATA: status %d", got)
	}

	q := queryID(t, "pieces.example", 2)
	post := []string{":method", "POST", ":scheme", "https", ":path", dnsmsg.DefaultPath, "content-type", dnsmsg.ContentType}
	r.headers(3, false, post...)
	for i := range q {
		r.fr.WriteData(3, i == len(q)-1, q[i:i+1])
	}
	if got := r.closed(true, 3)[3]; got != http.StatusOK {
		t.Errorf("POST one byte per frame: status %d", got)
	}

	r.headers(5, false, post...)
	r.fr.WriteData(5, false, queryID(t, "trailer.example", 3))
	r.headers(5, true, "x-trailer", "1")
	if got := r.closed(true, 5)[5]; got != http.StatusOK {
		t.Errorf("POST ended by trailers: status %d", got)
	}

	r.headers(7, false, post...)
	r.fr.WriteData(7, false, queryID(t, "bad-trailer.example", 4))
	r.headers(7, true, ":path", "/elsewhere")
	if got, ok := r.closed(true, 7)[7]; !ok || got != 0 {
		t.Errorf("a trailer with a pseudo-field: status %d; want a reset", got)
	}
	l.Close()
	res := wait()
	if len(res.Data) != 3 || !bytes.Equal(res.Data[1], q) {
		t.Errorf("delivered %d requests; want 3, the second one whole", len(res.Data))
	}
}

// TestDoHResetFreesPlaceForWaitingRequest: with one in-flight place, held
// by an unanswered request, a second request waits; the client's reset of
// the first, sent after the second, frees the place and the second is
// delivered (the connection reads frames while requests wait).
func TestDoHResetFreesPlaceForWaitingRequest(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{MaxInFlight: 1})
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.headers(1, true, getQuery(t, addr, "first.example", 1)...)
	first := nmtest.Next(t, requests(l), nmtest.Timeout)
	r.headers(3, true, getQuery(t, addr, "second.example", 2)...)
	r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	second := nmtest.Next(t, requests(l), nmtest.Timeout)
	if dnsmsg.ID(second.Data) != 2 {
		t.Fatalf("delivered ID %d; want 2", dnsmsg.ID(second.Data))
	}
	if err := first.Handle.Send(asReply(first.Data)[0]); !errors.Is(err, nm.ErrCanceled) {
		t.Errorf("reply to the reset request: %v; want %v", err, nm.ErrCanceled)
	}
	first.Handle.Detach()
	if err := second.Handle.Send(asReply(second.Data)[0]); err != nil {
		t.Errorf("reply to the second: %v", err)
	}
	second.Handle.Detach()
	if got := r.closed(true, 3)[3]; got != http.StatusOK {
		t.Errorf("second: status %d", got)
	}
	l.Close()
	nmtest.ExpectFinal(t, requests(l), 0, nm.ErrCanceled)
}
