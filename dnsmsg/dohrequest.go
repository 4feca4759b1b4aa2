package dnsmsg

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// ServeHTTP implements http.Handler: it turns one HTTP request into one DNS
// request on its endpoint's channel and writes the reply sent on its
// handle. It runs on the stream's goroutine (net/http's or x/net/http2's),
// which owns w.
func (s *httpServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hc, _ := r.Context().Value(connKey{}).(*httpConn)
	if hc == nil {
		http.Error(w, "no connection", http.StatusInternalServerError)
		return
	}
	stats := s.meter.On(hc.shard)
	stats.Received.Add(1)
	ep, code := s.route(len(r.RequestURI), r.URL.Path, r.Method)
	if code != 0 {
		s.fail(w, code, stats)
		return
	}
	q := s.request(hc)
	defer q.unref()
	msg, code := q.read(w, r, s.initial)
	if code == 0 && checkRequest(msg) != nil {
		code = http.StatusBadRequest
	}
	if code != 0 {
		q.h.Detach()
		if code == http.StatusRequestEntityTooLarge || code == http.StatusRequestTimeout {
			// The body was not read to its end: net/http would wait for
			// the rest before answering, to keep the connection.
			w.Header()["Connection"] = connectionClose
		}
		s.fail(w, code, stats)
		return
	}
	if !hc.acquire(r, s.stop) {
		q.h.Detach()
		panic(http.ErrAbortHandler) // the stream or the listener ended: no answer
	}
	defer hc.release()
	q.h.SetMeter(s.meter)
	q.h.Measure(s.meter.Latency(hc.shard))
	if ok, full := ep.offer(hc.shard, nm.Event{Handle: nm.Handle(q.h), Data: msg}); !ok {
		q.h.Detach()
		code := http.StatusServiceUnavailable
		if full {
			stats.Shed.Add(1)
			logShed(s.m, core.HTTP, hc.peer)
			code = s.cfg.shedStatus()
		}
		s.fail(w, code, stats)
		return
	}
	q.wait(w, r, stats)
}

// route finds a request's endpoint from the length of its URI, its
// (unescaped) path and its method, or the status that refuses it.
func (s *httpServer) route(uriLen int, path, method string) (*endpoint, int) {
	if uriLen > s.cfg.maxURI() {
		return nil, http.StatusRequestURITooLong
	}
	ep := s.eps.Load().paths[path]
	switch {
	case ep == nil:
		return nil, http.StatusNotFound
	case method != http.MethodGet && method != http.MethodPost:
		return nil, http.StatusMethodNotAllowed
	}
	return ep, 0
}

var allowed = []string{"GET, POST"}

// fail answers a request that is refused with an HTTP error status; the
// connection goes on.
func (s *httpServer) fail(w http.ResponseWriter, code int, stats *core.Counters) {
	stats.Dropped.Add(1)
	s.writeDeadline(w)
	if code == http.StatusMethodNotAllowed {
		w.Header()["Allow"] = allowed
	}
	http.Error(w, http.StatusText(code), code)
}

// acquire waits for an in-flight slot of the connection; false if the
// stream or the listener ended first.
func (hc *httpConn) acquire(r *http.Request, stop <-chan struct{}) bool {
	select {
	case hc.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case hc.slots <- struct{}{}:
		return true
	case <-r.Context().Done():
	case <-stop:
	}
	return false
}

func (hc *httpConn) release() { <-hc.slots }

// httpRequest is one DoH request and the socket of its handle. The handler
// goroutine owns the ResponseWriter; the consumer replies through the
// handle; they meet under mu and on reply.
type httpRequest struct {
	s  *httpServer
	h  core.Handle
	hc *httpConn
	// reply carries the reply to the handler. Sender: Send or SendAsync,
	// once (state guards it), so its one slot never makes them wait.
	// Receiver: the handler, or finish when the stream ended first.
	reply chan httpReply
	// gone (buffer 1, non-blocking sends) tells the handler that the
	// handle was closed or released without a reply.
	gone chan struct{}
	copy []byte       // a Send's reply, copied (Send's b is the caller's once it returns)
	refs atomic.Int32 // the handler and the handle; the last puts it back

	mu    sync.Mutex
	state reqState // guarded by mu
	err   error    // why no reply can be sent any more; guarded by mu
}

type reqState uint8

const (
	reqWaiting reqState = iota // delivered, no reply yet
	reqReplied                 // a reply was handed to the handler
	reqDone                    // the stream ended, or the handle went
)

// httpReply is a reply handed to the handler; done (SendAsync's, nil for
// Send) gets its outcome.
type httpReply struct {
	b    []byte
	done chan<- error
}

// request returns a request from the pool, with its handle's one
// reference and the handler's.
func (s *httpServer) request(hc *httpConn) *httpRequest {
	q, _ := s.reqs.Get().(*httpRequest)
	if q == nil {
		q = &httpRequest{s: s, reply: make(chan httpReply, 1), gone: make(chan struct{}, 1)}
		q.h = core.NewHandle(hc.shard, q, hc.realLocal, hc.realPeer)
	} else {
		q.h.Reuse(hc.shard, q, hc.realLocal, hc.realPeer)
		select {
		case <-q.gone:
		default:
		}
	}
	q.h.SetProxied(hc.local, hc.peer)
	q.hc = hc
	q.state, q.err = reqWaiting, nil
	q.refs.Store(2)
	return q
}

func (q *httpRequest) unref() {
	if q.refs.Add(-1) == 0 {
		q.hc = nil
		if cap(*q.h.Buf()) > 4096 {
			putBody(*q.h.Buf())
			(*q.h.Buf()) = nil
		}
		if cap(q.copy) > 4096 {
			q.copy = nil
		}
		q.s.reqs.Put(q)
	}
}

// read takes the DNS message out of a GET or POST request into the
// handle's buffer, or returns the HTTP status that refuses it.
func (q *httpRequest) read(w http.ResponseWriter, r *http.Request, timeout time.Duration) ([]byte, int) {
	if r.Method == http.MethodGet {
		return decodeGET(q.h, r.URL.RawQuery)
	}
	if !isMessageType(r.Header["Content-Type"]) {
		return nil, http.StatusUnsupportedMediaType
	}
	if r.ContentLength > MaxSize {
		return nil, http.StatusRequestEntityTooLarge
	}
	if timeout > 0 {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	}
	return q.s.readBody(r.Body, q.h)
}

// decodeGET takes the DNS message out of a GET request's raw query into
// h's buffer, or returns the HTTP status that refuses it.
func decodeGET(h core.Handle, rawQuery string) ([]byte, int) {
	v, err := queryParam(rawQuery)
	if err != nil {
		return nil, http.StatusBadRequest
	}
	n := decodedLen(v)
	if n > MaxSize {
		return nil, http.StatusRequestEntityTooLarge
	}
	msg, err := decodeQuery(handleBuf(h, n), v)
	if err != nil {
		return nil, http.StatusBadRequest
	}
	return msg, 0
}

// handleBuf returns h's buffer with room for n bytes, keeping what it
// holds.
func handleBuf(h core.Handle, n int) []byte {
	if cap(*h.Buf()) < n {
		b := make([]byte, max(n, 512))
		copy(b, (*h.Buf()))
		(*h.Buf()) = b
	}
	(*h.Buf()) = (*h.Buf())[:cap(*h.Buf())]
	return (*h.Buf())[:n]
}

// readBody reads a POST body of at most MaxSize bytes into h's buffer,
// which grows with the bytes read (counted toward the listener's cap
// while the body is read).
func (s *httpServer) readBody(body io.Reader, h core.Handle) ([]byte, int) {
	n, charged := 0, 0
	defer func() { s.unchargeBody(&charged, charged) }()
	buf := growBody(h, 512, 0)
	for {
		if n == len(buf) {
			if n > MaxSize {
				return nil, http.StatusRequestEntityTooLarge
			}
			buf = growBody(h, n+1, n)
		}
		m, err := body.Read(buf[n:])
		n += m
		if m > 0 && !s.chargeBody(&charged, m) {
			s.meter.On(h.Shard()).TooLarge.Add(1)
			logBodyCap(s.m, h.PeerAddr())
			return nil, http.StatusRequestEntityTooLarge
		}
		switch {
		case n > MaxSize:
			return nil, http.StatusRequestEntityTooLarge
		case errors.Is(err, io.EOF):
			if n == 0 {
				return nil, http.StatusBadRequest
			}
			return buf[:n], 0
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, http.StatusRequestTimeout
		case err != nil:
			return nil, http.StatusBadRequest
		}
	}
}

// isMessageType reports whether a Content-Type header is ContentType
// (parameters aside).
func isMessageType(v []string) bool {
	return len(v) == 1 && isMessageTypeValue(v[0])
}

func isMessageTypeValue(v string) bool {
	t, _, _ := strings.Cut(v, ";")
	return strings.EqualFold(strings.TrimSpace(t), ContentType)
}

var (
	contentType     = []string{ContentType}
	connectionClose = []string{"close"}
)

// wait waits for the reply and writes it, or gives up when the handle goes
// without one (the stream is reset), the stream ends, the listener
// closes, or the request timeout passes (503: HTTP/1.1 cannot reset one
// request). The handler, not the sender, waits for the peer, within the
// write timeout.
func (q *httpRequest) wait(w http.ResponseWriter, r *http.Request, stats *core.Counters) {
	var expiry <-chan time.Time
	if d := q.s.cfg.requestTimeout(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		expiry = t.C
	}
	for {
		select {
		case rep := <-q.reply:
			q.write(w, rep, stats)
			return
		case <-q.gone:
			q.finish(nm.ErrClosed)
			panic(http.ErrAbortHandler) // resets the stream: there is no reply
		case <-r.Context().Done():
			q.finish(nm.ErrCanceled)
			return
		case <-q.s.stop:
			q.finish(nm.ErrCanceled)
			panic(http.ErrAbortHandler) // reset the stream rather than answer an empty 200
		case <-expiry:
			if !q.expire() {
				expiry = nil // a reply or the handle's end came first: it is on its channel
				continue
			}
			// Delivered and left unanswered: the handler returns, which
			// gives the place back; the connection goes on.
			stats.Expired.Add(1)
			q.s.writeDeadline(w)
			code := http.StatusServiceUnavailable
			http.Error(w, http.StatusText(code), code)
			return
		}
	}
}

// write writes a reply and reports its outcome to its sender.
func (q *httpRequest) write(w http.ResponseWriter, rep httpReply, stats *core.Counters) {
	h := w.Header()
	h["Content-Type"] = contentType
	h["Cache-Control"] = cacheHeader(rep.b)
	rc := q.s.writeDeadline(w)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(rep.b)
	if err == nil {
		err = rc.Flush()
	}
	if err != nil {
		stats.SendFailed.Add(1)
		err = mapWriteErr(err)
		if errors.Is(err, nm.ErrTimedOut) {
			stats.WriteTimeouts.Add(1)
		}
	} else {
		stats.Sent.Add(1)
	}
	q.finish(nm.ErrClosed)
	q.complete(rep, err)
}

// expire ends a request still waiting for its reply when the request
// timeout passes: a late Send fails with nm.ErrClosed (and
// nm.ErrTimedOut). False if a reply was handed over, or the handle went,
// first.
func (q *httpRequest) expire() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state != reqWaiting {
		return false
	}
	q.state, q.err = reqDone, nm.ErrTimedOut
	return true
}

// finish ends the request: later sends fail with err, and a reply that
// raced with the end completes with it.
func (q *httpRequest) finish(err error) {
	q.mu.Lock()
	q.state, q.err = reqDone, err
	q.mu.Unlock()
	select {
	case rep := <-q.reply:
		q.complete(rep, err)
	default:
	}
}

// complete reports a reply's outcome to its sender, if it asked for it
// (SendAsync).
func (q *httpRequest) complete(rep httpReply, err error) {
	if rep.done != nil {
		q.s.m.Complete(rep.done, err)
	}
}

// writeDeadline sets the write timeout on w's connection for what is
// written next, and returns w's controller.
func (s *httpServer) writeDeadline(w http.ResponseWriter) *http.ResponseController {
	rc := http.NewResponseController(w)
	var deadline time.Time // none
	if s.write > 0 {
		deadline = time.Now().Add(s.write)
	}
	rc.SetWriteDeadline(deadline)
	return rc
}

// submit hands a reply to the handler; only the first one is taken. b is
// copied unless owned (SendAsync's b is the caller's until done).
func (q *httpRequest) submit(b []byte, done chan<- error, owned bool) error {
	switch {
	case len(b) < HeaderLen:
		return nm.ErrBadMessage
	case len(b) > MaxSize:
		return nm.ErrTooLarge
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case reqReplied:
		return nm.ErrClosed
	case reqDone:
		return closedBy(q.err)
	}
	q.state = reqReplied
	if !owned {
		q.copy = append(q.copy[:0], b...)
		b = q.copy
	}
	q.reply <- httpReply{b: b, done: done}
	return nil
}

// Send implements socket: the reply is handed to the request's handler,
// which writes it and ends the stream; Send does not wait for the peer,
// and b may be reused at once.
func (q *httpRequest) Send(h core.Handle, b []byte) error { return q.submit(b, nil, false) }

// SendAsync implements socket: done gets the outcome once the handler
// wrote the reply or failed to.
func (q *httpRequest) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	return q.submit(b, done, true)
}

// Read implements socket: a request handle is not read.
func (q *httpRequest) Read(h core.Handle) <-chan nm.Event { return notReadable() }

// ReadStop implements socket.
func (q *httpRequest) ReadStop(h core.Handle) {}

// Close implements socket: the stream is reset, unless a reply was
// sent.
func (q *httpRequest) Close(h core.Handle) { q.abandon() }

// Released implements socket: a request released without a reply has
// its stream reset.
func (q *httpRequest) Released(h core.Handle) {
	q.abandon()
	if r, ok := h.Data().(nm.Resetter); ok {
		r.Reset()
	}
	q.unref()
}

func (q *httpRequest) abandon() {
	q.mu.Lock()
	if q.state == reqWaiting {
		q.state, q.err = reqDone, nm.ErrClosed
		select {
		case q.gone <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
}
