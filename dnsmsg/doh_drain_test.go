package dnsmsg_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestDoHShutdownDrains: a request delivered before Shutdown is answered
// after it; the client gets GOAWAY naming its stream, a stream it opens
// after is refused, and Shutdown returns once the last stream was
// answered.
func TestDoHShutdownDrains(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	addr := l.Addr().String()
	r := dialRawH2(t, addr)
	r.headers(1, true, getQuery(t, addr, "slow.example", 1)...)
	slow := nmtest.Next(t, requests(l), nmtest.Timeout)
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(context.Background()) }()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("before GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.LastStreamID != 1 || g.ErrCode != http2.ErrCodeNo {
				t.Errorf("GOAWAY last stream %d, %v; want 1, NO_ERROR", g.LastStreamID, g.ErrCode)
			}
			break
		}
	}
	r.headers(3, true, getQuery(t, addr, "late.example", 2)...)
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("before the refusal: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 3 {
			if rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Errorf("stream 3 reset with %v; want REFUSED_STREAM", rst.ErrCode)
			}
			break
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request unanswered", err)
	default:
	}
	if err := slow.Handle.Send(asReply(slow.Data)[0]); err != nil {
		t.Errorf("the reply after Shutdown: %v", err)
	}
	slow.Handle.Detach()
	if got := r.closed(true, 1)[1]; got != http.StatusOK {
		t.Errorf("the slow request: status %d; want 200", got)
	}
	r.conn.Close() // the server waits for our side (at most a second)
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(nmtest.Timeout):
		t.Fatal("Shutdown still waits after the last reply")
	}
	nmtest.ExpectFinal(t, requests(l), 0, nm.ErrCanceled)
}

// TestDoHShutdownDrainsHTTP1: an HTTP/1.1 request delivered before
// Shutdown is answered after it, its connection closes after the
// response, and Shutdown returns then.
func TestDoHShutdownDrainsHTTP1(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{HTTP1: true})
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{TLSClientConfig: conf}
	defer tr.CloseIdleConnections()
	type result struct {
		code  int
		close bool
		err   error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get(dohURI(l) + "?dns=" + base64.RawURLEncoding.EncodeToString(queryID(t, "slow.example", 1)))
		if err != nil {
			got <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- result{code: resp.StatusCode, close: resp.Close}
	}()
	slow := nmtest.Next(t, requests(l), nmtest.Timeout)
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(context.Background()) }()
	if err := slow.Handle.Send(asReply(slow.Data)[0]); err != nil {
		t.Errorf("the reply after Shutdown: %v", err)
	}
	slow.Handle.Detach()
	if r := <-got; r.err != nil || r.code != http.StatusOK {
		t.Errorf("the slow request: %d, %v; want 200", r.code, r.err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(nmtest.Timeout):
		t.Fatal("Shutdown still waits after the last reply")
	}
	nmtest.ExpectFinal(t, requests(l), 0, nm.ErrCanceled)
}
