package dnsmsg

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// RequestError reports, on a DoH or DoQ client Conn, a query that failed
// alone: over DoH the server answered with an error status or with
// something that is not a DNS message; over DoQ its stream failed (Status
// is then 0). It ends only the Read that returns it (the Conn goes on),
// like nm.ErrTimedOut.
type RequestError struct {
	ID     uint16 // the query's ID
	Status int    // the HTTP status; 200 when the body was the fault; 0 over DoQ
	Err    error  // what was wrong with a 200 reply, or nil
}

func (e *RequestError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("dnsmsg: query %d: %v", e.ID, e.Err)
	}
	return fmt.Sprintf("dnsmsg: query %d: HTTP status %d %s", e.ID, e.Status, http.StatusText(e.Status))
}

func (e *RequestError) Unwrap() error { return e.Err }

// DefaultHTTPInFlight is how many queries a DoH client Conn keeps in
// flight at most when ClientConfig.MaxInFlight is zero.
const DefaultHTTPInFlight = 100

// DialHTTPS opens a DNS over HTTPS client Conn (RFC 8484) to the server
// at uri ("https://host[:port]/path"; the path defaults to DefaultPath),
// over HTTP/2: ALPN "h2" unless tlsConf sets NextProtos, the server name
// from uri unless tlsConf sets one, sessions resumed as stream.DialTLS
// does. An "http://" uri speaks cleartext HTTP/2 (prior knowledge).
// Queries are sent with POST, or with GET when cfg.HTTPGet is set; each
// is a stream of its own, so many may be in flight, and each Read yields
// one reply, nm.ErrTimedOut, or a *RequestError for a query the server
// refused.
func DialHTTPS(ctx context.Context, um *nm.Manager, uri string, tlsConf *tls.Config, cfg ClientConfig) (*Conn, error) {
	m := (*core.Manager)(um)
	u, addr, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "https" {
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		if len(tlsConf.NextProtos) == 0 {
			tlsConf = tlsConf.Clone()
			tlsConf.NextProtos = []string{http2.NextProtoTLS}
		}
	} else {
		tlsConf = nil
	}
	shard := m.NextShard()
	nc, err := stream.DialConn(streamhook.WithShard(ctx, shard), (*nm.Manager)(m), addr, tlsConf, cfg.stream())
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol != http2.NextProtoTLS {
		nc.Close()
		return nil, errors.New("dnsmsg: the server did not negotiate HTTP/2 (ALPN h2)")
	}
	w := &watchedConn{Conn: nc}
	t, err := newHTTPTransport(shard, w, u, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	w.watch(t)
	c, err := newStreamClient(m, nm.Handle(t.h), core.HTTP, &msgQueue{}, cfg)
	if err != nil {
		return nil, err
	}
	c.sendCtx = t.sendContext
	return c, nil
}

// watchedConn is the connection under a DoH client Conn's HTTP/2 client,
// whose reader reads it at all times: the first read error (the server
// closed or reset the connection, idle or not) ends the Conn with it.
type watchedConn struct {
	net.Conn
	mu   sync.Mutex
	t    *httpTransport // told of the error; guarded by mu
	err  error          // the first read error; guarded by mu
	told bool           // t was told; guarded by mu
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.tell()
		w.mu.Unlock()
	}
	return n, err
}

// watch sets the transport to tell; an error that came before is told now.
func (w *watchedConn) watch(t *httpTransport) {
	w.mu.Lock()
	w.t = t
	w.tell()
	w.mu.Unlock()
}

// tell tells the transport of the read error, once. Called with mu held.
func (w *watchedConn) tell() {
	if w.t != nil && w.err != nil && !w.told {
		w.told = true
		w.t.lost(w.err)
	}
}

// lost ends the connection with the read error err, mapped to a sentinel,
// from a goroutine of its own: the HTTP/2 reader that saw it must not wait
// for the close.
func (t *httpTransport) lost(err error) {
	err = connError(err)
	if t.m.Go(func() { t.shutdown(err) }) != nil {
		t.shutdown(err)
	}
}

// httpTransport is the socket of a DoH client connection's handle: each
// Send is an HTTP/2 request on a goroutine of its own, whose reply (or
// *RequestError) comes on the handle's channel.
type httpTransport struct {
	m     *core.Manager
	h     core.Handle
	cc    *http2.ClientConn
	u     *url.URL
	get   bool
	stats *core.Counters
	ctx   context.Context // canceled by shutdown: requests give up
	stop  context.CancelFunc
	// ch carries replies and request errors, then the final event.
	// Senders: the request goroutines, waiting for room (so replies nobody
	// reads push back on the server); the last one to end after shutdown
	// sends the final event and closes it.
	ch chan nm.Event
	// slots holds a token per request on the wire: the in-flight bound.
	slots   chan struct{}
	untrack func()

	mu      sync.Mutex
	closing bool  // guarded by mu
	reason  error // the final error; guarded by mu
	active  int   // request goroutines running; guarded by mu
}

func newHTTPTransport(shard *core.Shard, nc net.Conn, u *url.URL, cfg ClientConfig) (*httpTransport, error) {
	m := shard.Manager()
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(nc)
	if err != nil {
		return nil, err
	}
	inFlight := cfg.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultHTTPInFlight
	}
	t := &httpTransport{
		m:     m,
		cc:    cc,
		u:     u,
		get:   cfg.HTTPGet,
		stats: shard.Counters(core.HTTP),
		ch:    make(chan nm.Event, clientQueue),
		slots: make(chan struct{}, inFlight),
	}
	t.ctx, t.stop = context.WithCancel(m.Context())
	if t.untrack, err = m.Track(func() { t.shutdown(nil) }); err != nil {
		cc.Close()
		return nil, err
	}
	t.stats.Opened.Add(1)
	t.stats.Active.Add(1)
	t.h = core.NewHandle(shard, t, transport.AddrPort(nc.LocalAddr()), transport.AddrPort(nc.RemoteAddr()))
	return t, nil
}

// shutdown ends the connection: requests in flight give up, and the final
// event (reason, or nm.ErrCanceled) follows once they have.
func (t *httpTransport) shutdown(reason error) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.closing = true
	t.reason = reason
	if t.m.Closing() {
		// A local shutdown: when the whole manager closes, the peer's
		// reset (ours, from the other end) is part of it.
		t.reason = nil
	}
	last := t.active == 0
	t.mu.Unlock()
	t.stop()
	t.cc.Close()
	if last {
		t.finish()
	}
}

func (t *httpTransport) finish() {
	t.untrack()
	t.stats.Closed.Add(1)
	t.stats.Active.Add(-1)
	reason := t.reason
	if reason == nil {
		reason = nm.ErrCanceled
	}
	core.Finalize(t.ch, nm.Event{Handle: nm.Handle(t.h), Err: reason}, nil)
}

// Send implements socket: it starts the request for the query b (a
// copy of it) and returns; it waits only for the in-flight bound.
func (t *httpTransport) Send(h core.Handle, b []byte) error {
	return t.sendContext(context.Background(), b)
}

// sendContext is Send, waiting for the in-flight bound within ctx.
func (t *httpTransport) sendContext(ctx context.Context, b []byte) error {
	if len(b) < HeaderLen {
		return nm.ErrBadMessage
	}
	select {
	case t.slots <- struct{}{}:
	case <-t.ctx.Done():
		return nm.ErrClosed
	case <-ctx.Done():
		return ctxError(ctx)
	}
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		<-t.slots
		return nm.ErrClosed
	}
	t.active++
	t.mu.Unlock()
	q := bytes.Clone(b)
	if err := t.m.Go(func() { t.roundTrip(q) }); err != nil {
		<-t.slots
		t.done()
		return err
	}
	return nil
}

// SendAsync implements socket: done gets the outcome of starting the
// request.
func (t *httpTransport) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	if err := t.Send(h, b); err != nil {
		return err
	}
	t.m.Complete(done, nil)
	return nil
}

// done ends a request goroutine's part.
func (t *httpTransport) done() {
	t.mu.Lock()
	t.active--
	last := t.closing && t.active == 0
	t.mu.Unlock()
	if last {
		t.finish()
	}
}

// roundTrip sends one query and delivers its reply. The in-flight slot
// is given back once the exchange is over, before the reply waits to be
// read: replies not yet read do not hold queries back.
func (t *httpTransport) roundTrip(q []byte) {
	defer t.done()
	id := ID(q)
	msg, rerr, err := t.exchange(q)
	<-t.slots
	switch {
	case err != nil:
		if t.ctx.Err() == nil {
			t.shutdown(connError(err))
		}
		return
	case rerr != nil:
		rerr.ID = id
		t.deliver(nm.Event{Handle: nm.Handle(t.h), Err: rerr})
		return
	}
	t.deliver(nm.Event{Handle: nm.Handle(t.h), Data: msg})
}

// exchange sends the query q and reads its reply: a message, the reason
// this request failed, or the error that ended the connection.
func (t *httpTransport) exchange(q []byte) ([]byte, *RequestError, error) {
	req, err := t.request(q)
	if err != nil {
		return nil, &RequestError{Err: err}, nil
	}
	resp, err := t.cc.RoundTrip(req)
	if err != nil {
		t.stats.SendFailed.Add(1)
		var se http2.StreamError
		if t.ctx.Err() == nil && (errors.As(err, &se) || t.cc.CanTakeNewRequest()) {
			return nil, &RequestError{Err: connError(err)}, nil // this stream only
		}
		return nil, nil, err
	}
	defer resp.Body.Close()
	t.stats.Sent.Add(1)
	msg, rerr := readReply(resp)
	if rerr != nil {
		t.stats.Dropped.Add(1)
		return nil, rerr, nil
	}
	t.stats.Received.Add(1)
	return msg, nil, nil
}

// request builds the HTTP request of the query q.
func (t *httpTransport) request(q []byte) (*http.Request, error) {
	if t.get {
		req, err := http.NewRequestWithContext(t.ctx, http.MethodGet, getURI(t.u, q), nil)
		if err == nil {
			req.Header["Accept"] = contentType
		}
		return req, err
	}
	req, err := http.NewRequestWithContext(t.ctx, http.MethodPost, t.u.String(), bytes.NewReader(q))
	if err == nil {
		req.Header["Content-Type"] = contentType
		req.Header["Accept"] = contentType
	}
	return req, err
}

// readReply takes the DNS message out of a response, or says why not.
func readReply(resp *http.Response) ([]byte, *RequestError) {
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &RequestError{Status: resp.StatusCode}
	}
	if !isMessageType(resp.Header["Content-Type"]) {
		return nil, &RequestError{Status: resp.StatusCode, Err: fmt.Errorf("content type %q: %w", resp.Header.Get("Content-Type"), nm.ErrBadMessage)}
	}
	if resp.ContentLength > MaxSize {
		return nil, &RequestError{Status: resp.StatusCode, Err: nm.ErrTooLarge}
	}
	msg, err := io.ReadAll(io.LimitReader(resp.Body, MaxSize+1))
	switch {
	case err != nil:
		return nil, &RequestError{Status: resp.StatusCode, Err: core.MapError(err)}
	case len(msg) > MaxSize:
		return nil, &RequestError{Status: resp.StatusCode, Err: nm.ErrTooLarge}
	case len(msg) < HeaderLen:
		return nil, &RequestError{Status: resp.StatusCode, Err: nm.ErrBadMessage}
	}
	return msg, nil
}

// deliver hands an event to the client, waiting for room; it gives up when
// the connection shuts down.
func (t *httpTransport) deliver(ev nm.Event) {
	select {
	case t.ch <- ev:
	case <-t.ctx.Done():
	}
}

// Read implements socket: the channel of replies.
func (t *httpTransport) Read(h core.Handle) <-chan nm.Event { return t.ch }

// ReadStop implements socket; replies wait on the channel meanwhile.
func (t *httpTransport) ReadStop(h core.Handle) {}

// Close implements socket.
func (t *httpTransport) Close(h core.Handle) { t.shutdown(nil) }

// Released implements socket.
func (t *httpTransport) Released(h core.Handle) {
	t.shutdown(nil)
	h.Free()
}

// msgQueue is the replyBuffer of DoH clients: each event holds one whole
// message, owned by the event.
type msgQueue struct{ q [][]byte }

func (m *msgQueue) Write(p []byte) { m.q = append(m.q, p) }

func (m *msgQueue) Next() ([]byte, error) {
	if len(m.q) == 0 {
		return nil, nil
	}
	p := m.q[0]
	m.q[0] = nil
	m.q = m.q[1:]
	return p, nil
}

func (m *msgQueue) Keep()  {}
func (m *msgQueue) Clear() { m.q = nil }
