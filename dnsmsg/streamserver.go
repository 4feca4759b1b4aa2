package dnsmsg

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// DefaultMaxInFlight is how many requests of one TCP or TLS connection may
// wait for their reply when ServerConfig.MaxInFlight is zero (BIND's
// STREAM_CLIENTS_PER_CONN).
const DefaultMaxInFlight = 23

// DefaultMaxBuffered is ServerConfig.MaxBuffered's default: the most
// request bytes a TCP or TLS listener's connections keep in partial
// messages, all together.
const DefaultMaxBuffered = 64 << 20

// ALPN is the TLS application protocol of DNS over TLS (RFC 7858).
const ALPN = "dot"

// ListenTCP serves DNS over TCP on addr (RFC 7766): each message is
// preceded by its length as 2 bytes, big-endian. Requests from every
// connection arrive on Requests, as UDP ones do. ctx bounds the binding
// only.
func ListenTCP(ctx context.Context, um *nm.Manager, addr string, cfg ServerConfig) (*Listener, error) {
	m := (*core.Manager)(um)
	return listenStream(ctx, m, addr, nil, cfg)
}

// ListenTLS serves DNS over TLS (DoT, RFC 7858) on addr. If tlsConf has no
// NextProtos, the listener offers ALPN "dot".
func ListenTLS(ctx context.Context, um *nm.Manager, addr string, tlsConf *tls.Config, cfg ServerConfig) (*Listener, error) {
	m := (*core.Manager)(um)
	if tlsConf == nil {
		return nil, errors.New("dnsmsg: ListenTLS needs a tls.Config")
	}
	if len(tlsConf.NextProtos) == 0 {
		tlsConf = tlsConf.Clone()
		tlsConf.NextProtos = []string{ALPN}
	}
	return listenStream(ctx, m, addr, tlsConf, cfg)
}

// streamServer is the DNS side of a TCP or TLS listener: the framing of
// every connection, and the one channel of requests they share.
type streamServer struct {
	m        *core.Manager
	sl       *stream.Listener
	inFlight int32
	// requestTimeout bounds how long a delivered request may stay
	// unanswered (ServerConfig.RequestTimeout); zero or less: no bound.
	requestTimeout time.Duration
	// buffered caps the bytes the connections' assemblers keep, together
	// (ServerConfig.MaxBuffered): past it, the connection that would grow
	// ends, counted TooLarge.
	buffered budget
	shed     int // the response code of shed requests (ServerConfig.Shed)
	kind     nm.Transport
	// ch carries the requests. Senders: the connections' reader goroutines,
	// waiting for room (a stream peer is pushed back, never dropped). The
	// last of the listener and its connections to end sends the final event
	// and closes it.
	ch chan nm.Event
	// handles keeps the state of released request handles, with their
	// buffers.
	handles core.HandlePool

	mu     sync.Mutex
	conns  map[*streamConn]struct{} // guarded by mu
	closed bool                     // guarded by mu
	drain  connDrain[*streamConn]   // guarded by mu
	// stopping mirrors drain.draining for the readers, which look at it
	// before each delivery: no request read after Shutdown began is
	// delivered, even before its connection's own drain has begun.
	stopping atomic.Bool
	refs     int // the listener, its stream listener until it has ended, and each connection not yet ended; guarded by mu
	untrack  func()
	undrain  func()
}

func listenStream(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, cfg ServerConfig) (*Listener, error) {
	s := &streamServer{
		m:              m,
		inFlight:       int32(cfg.maxInFlight()),
		requestTimeout: cfg.requestTimeout(),
		ch:             make(chan nm.Event, cfg.queue(m)),
		handles:        core.HandlePool{Max: cfg.queue(m)},
		conns:          make(map[*streamConn]struct{}),
		refs:           2, // the listener, and the stream listener's end
	}
	s.buffered.max = int64(cfg.maxBuffered())
	s.shed = cfg.shed()
	if s.kind = nm.TCP; tlsConf != nil {
		s.kind = nm.TLS
	}
	sc := cfg.stream()
	if sc.Proxy == nil {
		sc.Proxy = cfg.Proxy
	}
	var err error
	if s.sl, err = listenStreamOrTLS(streamhook.With(ctx, streamhook.Hooks{Consume: s.consume, Ended: s.unref}), m, addr, tlsConf, sc); err != nil {
		return nil, err
	}
	s.undrain = m.TrackDrain(s.shutdown) // before Track: close may run from then on
	if s.untrack, err = m.Track(func() { s.close() }); err != nil {
		s.undrain()
		s.sl.Close()
		return nil, err
	}
	return &Listener{addr: s.sl.Addr(), ch: s.ch, close: s.close, shutdown: s.shutdown, stats: s.sl.Stats}, nil
}

// shutdown drains the listener: it stops accepting and reading requests,
// lets every connection answer the requests already delivered, then ends
// each connection with a FIN (or TLS close_notify) after its replies; when
// every connection has ended, or ctx first, it closes the listener.
func (s *streamServer) shutdown(ctx context.Context) (err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	first, drained, conns := s.drain.begin(s.conns)
	if first {
		s.stopping.Store(true)
	}
	s.mu.Unlock()
	if first {
		ended := logDrain(s.m, core.Transport(s.kind), s.sl.Addr(), len(conns))
		defer func() { ended(err) }()
		s.sl.StopAccepting()
		for _, c := range conns {
			c.drain()
		}
	}
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.close()
	return err
}

// close stops accepting and shuts every connection down; the final event
// follows once they have all ended.
func (s *streamServer) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.undrain()
	conns := make([]*streamConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.sl.Close()
	for _, c := range conns {
		c.h.Close()
	}
	s.unref()
	return nil
}

func (s *streamServer) unref() {
	s.mu.Lock()
	s.refs--
	last := s.refs == 0
	s.mu.Unlock()
	if last {
		s.untrack()
		s.handles.Close()
		core.Finalize(s.ch, nm.Event{Err: nm.ErrCanceled}, detachRequest)
	}
}

// consume takes a new connection (streamhook.Hooks.Consume).
func (s *streamServer) consume(h core.Handle, stop <-chan struct{}) streamhook.Consumer {
	kind := core.TCP
	if _, ok := stream.TLSState(nm.Handle(h)); ok {
		kind = core.TLS
	}
	c := &streamConn{s: s, h: h, stop: stop, stats: countersOf(h, kind)}
	if mt := h.Meter(); mt != nil { // the stream listener's
		c.lat = mt.Latency(h.Shard())
	}
	c.asm.init(MaxSize, &s.buffered)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.drain.draining {
		return nil
	}
	s.conns[c] = struct{}{}
	s.refs++
	return c
}

// streamConn is one TCP or TLS connection of a streamServer. Its reader
// goroutine (the stream connection's) calls Data and Final; its requests'
// handles are bound to it, so it is their socket too.
type streamConn struct {
	s     *streamServer
	h     core.Handle // the connection; our reference goes at Final
	stop  <-chan struct{}
	stats *core.Counters
	lat   *core.Latency // nil without a meter
	asm   assembler     // owned by the reader goroutine
	// slot (buffer 1, non-blocking sends) tells the reader, waiting at the
	// in-flight bound, that a request was released. The reader makes it
	// the first time it waits: most connections never do.
	slot     atomic.Pointer[chan struct{}]
	inFlight atomic.Int32 // requests delivered and not yet released
	// draining is set by the listener's Shutdown: no request is delivered
	// any more, and the connection ends once inFlight is zero.
	draining  atomic.Bool
	drainOnce sync.Once
	pending   pending // requests in flight, for the request timeout
}

// isDraining reports whether requests must no longer be delivered: the
// connection or its listener drains.
func (c *streamConn) isDraining() bool { return c.draining.Load() || c.s.stopping.Load() }

// drain stops delivering requests; the connection ends once those
// delivered are released.
func (c *streamConn) drain() {
	c.draining.Store(true)
	c.wakeReader()
	if c.inFlight.Load() == 0 {
		c.drained()
	}
}

// drainLinger is how long a drained connection waits, after its FIN, for
// the client to close its side before it closes too: as net/http, so
// that a query the client sends meanwhile is read and dropped rather than
// answered by a reset that could discard the replies it has not read yet.
const drainLinger = 500 * time.Millisecond

// drained ends a draining connection with nothing left in flight: a FIN
// (or TLS close_notify) after the replies sent, so that the client sees
// the end of the stream and goes elsewhere; the connection closes when the
// client closes its side, or after drainLinger.
func (c *streamConn) drained() {
	c.drainOnce.Do(func() {
		stream.CloseWrite(nm.Handle(c.h))
		time.AfterFunc(drainLinger, c.h.Close)
	})
}

// wakeReader wakes the reader if it waits at the in-flight bound.
func (c *streamConn) wakeReader() {
	if slot := c.slot.Load(); slot != nil {
		select {
		case *slot <- struct{}{}:
		default:
		}
	}
}

// Data frames the bytes read into requests and delivers them, waiting at
// the in-flight bound: one read of many small queries is taken a few at a
// time while the rest wait, unparsed.
func (c *streamConn) Data(b []byte) error {
	c.asm.Write(b)
	err := c.frames()
	c.asm.Keep() // may find the listener's cap reached
	if err == nil {
		err = c.asm.Err()
	}
	if err != nil {
		if errors.Is(err, nm.ErrTooLarge) {
			c.stats.TooLarge.Add(1)
			c.s.m.Logger().Warn("dnsmsg: connection cut: request too large or buffered bytes at the cap", "peer", c.h.PeerAddr(), "err", err)
		} else {
			c.stats.Dropped.Add(1)
			c.s.m.Logger().Debug("dnsmsg: bad stream frame", "peer", c.h.PeerAddr(), "err", err)
		}
	}
	return err
}

// frames delivers the complete messages written to the assembler.
func (c *streamConn) frames() error {
	for {
		msg, err := c.asm.Next()
		if err != nil || msg == nil {
			return err
		}
		c.stats.Received.Add(1)
		if checkRequest(msg) != nil {
			c.stats.Dropped.Add(1)
			continue
		}
		if c.isDraining() {
			c.asm.Clear() // the client asks again on another connection
			return nil
		}
		if !c.waitSlot() || !streamhook.WaitOutput(c.h) || !c.deliver(msg) {
			c.asm.Clear()
			return nil
		}
	}
}

// waitSlot waits until the connection has fewer requests in flight than
// its bound. It returns false if the connection shuts down first.
func (c *streamConn) waitSlot() bool {
	for c.inFlight.Load() >= c.s.inFlight {
		if c.draining.Load() {
			return false
		}
		slot := c.slot.Load()
		if slot == nil {
			ch := make(chan struct{}, 1)
			c.slot.Store(&ch)
			continue // a release before the Store did not see it: look again
		}
		select {
		case <-*slot:
		case <-c.stop:
			return false
		}
	}
	return true
}

// deliver hands msg to the consumer on a request handle of its own, or,
// when the requests channel is full (the consumers fall behind), sheds it:
// it is answered at once with the listener's shed code, counted Shed, and
// reading goes on. Not even a full channel makes a connection wait, so
// consumers that fall behind never stall a conversation. It returns false
// if the connection failed.
func (c *streamConn) deliver(msg []byte) bool {
	shard := c.h.Shard()
	if len(c.s.ch) == cap(c.s.ch) {
		return c.shed(msg)
	}
	rh := c.request(msg)
	if c.isDraining() {
		// Shutdown began after Data looked: whichever of drain and this
		// release sees inFlight reach zero ends the connection.
		rh.Detach()
		return false
	}
	ev := nm.Event{Handle: nm.Handle(rh), Data: (*rh.Buf())[2 : 2+len(msg)]}
	shard.Enter() // no event while the manager is paused
	select {
	case c.s.ch <- ev:
		shard.Exit()
		return true
	default:
	}
	shard.Exit()
	rh.Detach()
	return c.shed(msg)
}

// shed answers msg at once with the listener's shed code.
func (c *streamConn) shed(msg []byte) bool {
	c.stats.Shed.Add(1)
	logShed(c.s.m, core.Transport(c.s.kind), c.h.PeerAddr())
	var buf [maxRefusal]byte
	r := appendRefusal(buf[:0], msg, c.s.shed)
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(len(r)))
	return stream.SendPrefixed(nm.Handle(c.h), p[:], r) == nil
}

// request returns a handle for a request: a copy of msg after room for the
// reply's length prefix, holding a reference to the connection.
func (c *streamConn) request(msg []byte) core.Handle {
	rh := c.s.handles.Get()
	rh.Reuse(c.h.Shard(), c, c.h.RealLocalAddr(), c.h.RealPeerAddr())
	rh.SetProxied(c.h.LocalAddr(), c.h.PeerAddr())
	if c.lat != nil {
		rh.SetMeter(c.h.Meter())
		rh.Measure(c.lat)
	}
	if cap(*rh.Buf()) < 2+len(msg) {
		(*rh.Buf()) = make([]byte, 2+max(len(msg), 510))
	}
	(*rh.Buf()) = (*rh.Buf())[:2+len(msg)]
	copy((*rh.Buf())[2:], msg)
	c.h.Attach()
	if c.inFlight.Add(1) == 1 {
		streamhook.SetBusy(c.h, 1)
	}
	c.track(rh)
	return rh
}

// Final ends the connection's part in the listener.
func (c *streamConn) Final(err error) {
	c.asm.Clear()
	c.stopExpiry()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.drain.gone(c.s.conns)
	c.s.mu.Unlock()
	c.h.Detach()
	c.s.unref()
}

// Send implements socket for request handles: the reply goes out with
// its length prefix, in one write.
func (c *streamConn) Send(rh core.Handle, b []byte) error {
	var p [2]byte
	if err := prefix(&p, b); err != nil {
		return err
	}
	if len(c.s.ch) > 0 {
		// More requests wait for a consumer, so more replies follow: this
		// one leaves with them, in one write, when the consumers pause.
		return stream.SendPrefixedBatched(nm.Handle(c.h), p[:], b)
	}
	return stream.SendPrefixed(nm.Handle(c.h), p[:], b)
}

// SendAsync implements socket for request handles.
func (c *streamConn) SendAsync(rh core.Handle, b []byte, done chan<- error) error {
	var p [2]byte
	if err := prefix(&p, b); err != nil {
		return err
	}
	return stream.SendPrefixedAsync(nm.Handle(c.h), p[:], b, done)
}

// prefix writes the length prefix of a message b.
func prefix(p *[2]byte, b []byte) error {
	if len(b) < HeaderLen {
		return nm.ErrBadMessage
	}
	if len(b) > MaxSize {
		return nm.ErrTooLarge
	}
	binary.BigEndian.PutUint16(p[:], uint16(len(b)))
	return nil
}

// Read implements socket: a request handle is not read; its request
// came with it.
func (c *streamConn) Read(rh core.Handle) <-chan nm.Event { return notReadable() }

// ReadStop implements socket.
func (c *streamConn) ReadStop(rh core.Handle) {}

// Close implements socket: closing a request closes its connection.
func (c *streamConn) Close(rh core.Handle) { c.h.Close() }

// Released implements socket: the request is answered (or given up).
func (c *streamConn) Released(rh core.Handle) {
	c.s.handles.Put(rh)
	if c.untrack(rh) {
		c.releaseSlot()
	}
}

// releaseSlot frees a request's place on the connection: at its release,
// or when it expires.
func (c *streamConn) releaseSlot() {
	if c.inFlight.Add(-1) == 0 {
		streamhook.SetBusy(c.h, -1)
		if c.draining.Load() {
			c.drained()
		}
	}
	c.wakeReader()
	c.h.Detach()
}

// SetKeepalive marks the request's connection as kept alive (EDNS
// tcp-keepalive): its idle timeout becomes the keepalive timeout.
func (c *streamConn) SetKeepalive(rh core.Handle, on bool) { nm.Handle(c.h).SetKeepalive(on) }

// SetTimeouts replaces the timeouts of the request's connection.
func (c *streamConn) SetTimeouts(rh core.Handle, t nm.Timeouts) { nm.Handle(c.h).SetTimeouts(t) }

// notReadable returns a channel holding one final nm.ErrNotSupported event.
func notReadable() <-chan nm.Event {
	ch := make(chan nm.Event, 1)
	ch <- nm.Event{Err: nm.ErrNotSupported}
	close(ch)
	return ch
}

// KeepaliveTimeout returns the keepalive timeout of a request's connection,
// the value to advertise in an EDNS tcp-keepalive option (RFC 7828), and
// false for requests that did not come over TCP or TLS.
func KeepaliveTimeout(rh nm.Handle) (time.Duration, bool) {
	c, ok := core.Handle(rh).Socket().(*streamConn)
	if !ok {
		return 0, false
	}
	return stream.Timeouts(nm.Handle(c.h)).Keepalive, true
}

// listenStreamOrTLS listens with TLS when tlsConf is set, else with TCP.
func listenStreamOrTLS(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, sc stream.Config) (*stream.Listener, error) {
	if tlsConf != nil {
		return stream.ListenTLS(ctx, (*nm.Manager)(m), addr, tlsConf, sc)
	}
	return stream.Listen(ctx, (*nm.Manager)(m), addr, sc)
}

// countersOf returns the counters h counts on: its meter's, or its
// shard's of transport t.
func countersOf(h core.Handle, t core.Transport) *core.Counters {
	return core.CountersOf(h.Meter(), h.Shard(), t)
}

// detachRequest releases the reference a request event carries, for the
// events dropped when a listener's channel is finalized.
func detachRequest(ev nm.Event) {
	if ev.Err == nil && !ev.Handle.IsZero() {
		ev.Handle.Detach()
	}
}
