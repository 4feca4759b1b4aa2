package dnsmsg

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
)

// doqSessions is the TLS session cache of DoQ clients whose tls.Config
// has none: it lets a new Conn to a server resume its session, with 0-RTT.
var doqSessions = tls.NewLRUClientSessionCache(256)

// DialQUIC opens a DNS over QUIC (DoQ, RFC 9250) client Conn to the
// server at addr. Each query is a stream of its own, sent with message ID
// 0 as RFC 9250 asks; its reply comes back with the query's own ID, so
// Send, Read and Exchange work as on the other transports, with many
// queries in flight (at most cfg.MaxInFlight, DefaultHTTPInFlight if
// zero; Send waits at the bound). If tlsConf is nil or has no NextProtos,
// ALPN "doq" is asked for; with no ClientSessionCache, a cache shared by
// DoQ Conns lets a later Conn resume the session and send its QUERY
// messages as 0-RTT data (other opcodes wait for the handshake). A stream
// the server resets ends its query's Read with a *RequestError. ctx bounds
// the handshake.
func DialQUIC(ctx context.Context, um *nm.Manager, addr string, tlsConf *tls.Config, cfg ClientConfig) (*Conn, error) {
	m := (*core.Manager)(um)
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	tlsConf = tlsConf.Clone()
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{ALPNDoQ}
	}
	if tlsConf.ClientSessionCache == nil {
		tlsConf.ClientSessionCache = doqSessions
	}
	qc, err := quic.DialAddrEarly(ctx, addr, tlsConf, &quic.Config{
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		return nil, core.MapError(err)
	}
	t, err := newDoQClient(m, qc, cfg)
	if err != nil {
		qc.CloseWithError(DoQNoError, "")
		return nil, err
	}
	return newStreamClient(m, nm.Handle(t.h), core.QUIC, &msgQueue{}, cfg)
}

// doqClient is the socket of a DoQ client connection's handle: each Send
// is a stream on a goroutine of its own, whose reply (or *RequestError)
// comes on the handle's channel.
type doqClient struct {
	m     *core.Manager
	h     core.Handle
	qc    *quic.Conn
	stats *core.Counters
	ctx   context.Context // canceled by shutdown: queries give up
	stop  context.CancelFunc
	// ch carries replies and query errors, then the final event. Senders:
	// the query goroutines, waiting for room; the last one to end after
	// shutdown sends the final event and closes it.
	ch chan nm.Event
	// slots holds a token per query in flight: the in-flight bound.
	slots   chan struct{}
	untrack func()
	// rejectOnce moves the connection past a 0-RTT rejection once;
	// rejectErr is its outcome, read after rejectOnce.Do.
	rejectOnce sync.Once
	rejectErr  error

	mu      sync.Mutex
	closing bool  // guarded by mu
	reason  error // the final error; guarded by mu
	active  int   // query goroutines running; guarded by mu
}

func newDoQClient(m *core.Manager, qc *quic.Conn, cfg ClientConfig) (*doqClient, error) {
	shard := m.NextShard()
	t := &doqClient{
		m:     m,
		qc:    qc,
		stats: shard.Counters(core.QUIC),
		ch:    make(chan nm.Event, clientQueue),
		slots: make(chan struct{}, orDefault(cfg.MaxInFlight, DefaultHTTPInFlight)),
	}
	t.ctx, t.stop = context.WithCancel(m.Context())
	var err error
	if t.untrack, err = m.Track(func() { t.shutdown(nil) }); err != nil {
		return nil, err
	}
	t.stats.Opened.Add(1)
	t.stats.Active.Add(1)
	t.h = core.NewHandle(shard, t, transport.AddrPort(qc.LocalAddr()), transport.AddrPort(qc.RemoteAddr()))
	watch := func() { // the connection's end ends the Conn
		select {
		case <-qc.Context().Done():
			t.shutdown(core.MapError(context.Cause(qc.Context())))
		case <-t.ctx.Done():
		}
	}
	if err := m.Go(watch); err != nil {
		t.shutdown(err)
		return nil, err
	}
	return t, nil
}

// shutdown ends the connection: queries in flight give up, and the final
// event (reason, or nm.ErrCanceled) follows once they have.
func (t *doqClient) shutdown(reason error) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	t.closing, t.reason = true, reason
	if t.m.Closing() {
		t.reason = nil // a local shutdown, whatever the peer did meanwhile
	}
	last := t.active == 0
	t.mu.Unlock()
	t.stop()
	t.qc.CloseWithError(DoQNoError, "")
	if last {
		t.finish()
	}
}

func (t *doqClient) finish() {
	t.untrack()
	t.stats.Closed.Add(1)
	t.stats.Active.Add(-1)
	reason := t.reason
	if reason == nil {
		reason = nm.ErrCanceled
	}
	core.Finalize(t.ch, nm.Event{Handle: nm.Handle(t.h), Err: reason}, nil)
}

// Send implements socket: it starts the query b (a copy of it, with ID
// 0) on a stream of its own and returns; it waits only for the in-flight
// bound.
func (t *doqClient) Send(h core.Handle, b []byte) error {
	switch {
	case len(b) < HeaderLen:
		return nm.ErrBadMessage
	case len(b) > MaxSize:
		return nm.ErrTooLarge
	}
	select {
	case t.slots <- struct{}{}:
	case <-t.ctx.Done():
		return nm.ErrClosed
	}
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		<-t.slots
		return nm.ErrClosed
	}
	t.active++
	t.mu.Unlock()
	q := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(q, uint16(len(b)))
	copy(q[2:], b)
	q[2], q[3] = 0, 0
	id := ID(b)
	if err := t.m.Go(func() { growStack(); t.query(q, id) }); err != nil {
		// The manager is closing: the query goroutine never ran.
		<-t.slots
		t.done()
		return err
	}
	return nil
}

// SendAsync implements socket: done gets the outcome of starting the
// query.
func (t *doqClient) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	if err := t.Send(h, b); err != nil {
		return err
	}
	t.m.Complete(done, nil)
	return nil
}

// done ends a query goroutine's part.
func (t *doqClient) done() {
	t.mu.Lock()
	t.active--
	last := t.closing && t.active == 0
	t.mu.Unlock()
	if last {
		t.finish()
	}
}

// query sends the framed query q on a new stream and delivers its reply,
// with the query's ID id put back. A query the server refused as 0-RTT
// data is sent again once the handshake is over.
func (t *doqClient) query(q []byte, id uint16) {
	defer t.done()
	msg, err := t.exchange(q)
	if errors.Is(err, quic.Err0RTTRejected) && t.after0RTT() {
		msg, err = t.exchange(q)
	}
	<-t.slots
	switch {
	case err == nil:
		binary.BigEndian.PutUint16(msg, id)
		t.stats.Received.Add(1)
		t.deliver(nm.Event{Handle: nm.Handle(t.h), Data: msg})
	case t.ctx.Err() != nil:
	default:
		t.stats.Dropped.Add(1)
		t.deliver(nm.Event{Handle: nm.Handle(t.h), Err: &RequestError{ID: id, Err: err}})
	}
}

// after0RTT makes the connection usable after the server rejected its
// 0-RTT data (once for all queries); false if it ended meanwhile.
func (t *doqClient) after0RTT() bool {
	t.rejectOnce.Do(func() {
		_, t.rejectErr = t.qc.NextConnection(t.ctx)
	})
	return t.rejectErr == nil
}

// exchange runs one stream: the query, its FIN, the reply and its FIN.
// A query other than a QUERY waits for the handshake (no 0-RTT).
func (t *doqClient) exchange(q []byte) ([]byte, error) {
	if op := q[4] >> 3 & 0xf; op != 0 {
		select {
		case <-t.qc.HandshakeComplete():
		case <-t.ctx.Done():
			return nil, nm.ErrCanceled
		}
	}
	str, err := t.qc.OpenStreamSync(t.ctx)
	if err != nil {
		return nil, mapDoQError(err)
	}
	stop := context.AfterFunc(t.ctx, func() {
		str.CancelWrite(quic.StreamErrorCode(DoQRequestCancelled))
		str.CancelRead(quic.StreamErrorCode(DoQRequestCancelled))
	})
	defer stop()
	if _, err := str.Write(q); err != nil {
		return nil, mapDoQError(err)
	}
	str.Close()
	t.stats.Sent.Add(1)
	buf, err := readDoQMessage(str, nil)
	if err == nil && (len(buf) < 2+HeaderLen || ID(buf[2:]) != 0) {
		err = nm.ErrBadMessage
	}
	if err != nil {
		if isDoQProtocolError(err) {
			t.qc.CloseWithError(DoQProtocolError, err.Error())
		}
		str.CancelRead(quic.StreamErrorCode(DoQRequestCancelled))
		return nil, mapDoQError(err)
	}
	return buf[2:], nil
}

// deliver hands an event to the client, waiting for room; it gives up when
// the connection shuts down.
func (t *doqClient) deliver(ev nm.Event) {
	select {
	case t.ch <- ev:
	case <-t.ctx.Done():
	}
}

// Read implements socket: the channel of replies.
func (t *doqClient) Read(h core.Handle) <-chan nm.Event { return t.ch }

// ReadStop implements socket; replies wait on the channel meanwhile.
func (t *doqClient) ReadStop(h core.Handle) {}

// Close implements socket.
func (t *doqClient) Close(h core.Handle) { t.shutdown(nil) }

// Released implements socket.
func (t *doqClient) Released(h core.Handle) {
	t.shutdown(nil)
	h.Free()
}
