package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
)

// acceptQueue is the capacity of a listener's channel of new connections;
// when it is full, connections wait (their goroutines block) until the
// consumer takes them.
const acceptQueue = 64

// Listener accepts stream connections on one address, with one listening
// socket per shard. Its methods are safe for concurrent use.
type Listener struct {
	m    *core.Manager
	cfg  Config
	kind core.Transport
	// hooks are what a DNS listener asks of the connections
	// (internal/streamhook), from the context Listen was given.
	hooks streamhook.Hooks
	// meter counts the listener and its connections: the caller's (a DNS
	// listener's), or its own (ownMeter), closed when it ends.
	meter    *core.Meter
	ownMeter bool
	addr     netip.AddrPort
	lns      []*net.TCPListener
	tls      atomic.Pointer[tls.Config] // nil for TCP

	// ch carries accepted connections. Senders: the connections' goroutines,
	// after the TLS handshake. The last of the accept loops and pending
	// deliveries to end sends the final event and closes it.
	ch chan nm.Event
	// done is closed by Close.
	done chan struct{}
	// quota holds one token per open connection when MaxConns is set:
	// a send takes a place, a receive gives it back; its capacity is the
	// cap.
	quota chan struct{}
	adm   *admission   // per-client limits; nil if none
	refs  atomic.Int32 // accept loops, connections not yet delivered, and served ones
	once  sync.Once
	// stopOnce closes the listening sockets once (StopAccepting, Close).
	stopOnce sync.Once

	smu     sync.Mutex
	served  map[*net.TCPConn]struct{} // connections given to hooks.Serve; guarded by smu
	sclosed bool                      // Close closed the served connections; guarded by smu
	untrack func()
}

// Listen accepts TCP connections on addr with one socket per shard of m.
// ctx bounds the binding only.
func Listen(ctx context.Context, m *nm.Manager, addr string, cfg Config) (*Listener, error) {
	return listen(ctx, (*core.Manager)(m), addr, nil, cfg)
}

// ListenTLS is Listen with TLS: the handshake completes before a connection
// is delivered. tlsConf (its certificates, NextProtos for ALPN) can be
// replaced with SetTLSConfig while the listener runs.
func ListenTLS(ctx context.Context, m *nm.Manager, addr string, tlsConf *tls.Config, cfg Config) (*Listener, error) {
	if tlsConf == nil {
		return nil, errors.New("stream: ListenTLS needs a tls.Config")
	}
	return listen(ctx, (*core.Manager)(m), addr, tlsConf, cfg)
}

func listen(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, cfg Config) (*Listener, error) {
	kind := core.TCP
	if tlsConf != nil {
		kind = core.TLS
	}
	if m.Closing() {
		return nil, nm.ErrShuttingDown
	}
	sockets := m.Workers()
	if cfg.MaxConns > 0 && !cfg.RefuseAtCap {
		// A waiting quota needs one acceptor: with one socket per shard, a
		// shard holding the free slot could wait on an empty socket while
		// the waiting connection sits in another shard's backlog.
		sockets = 1
	}
	lns, err := transport.ListenTCP(ctx, addr, sockets, transport.ListenConfig(cfg.Socket))
	if err != nil {
		m.Shard(0).Counters(kind).BindFailed.Add(1)
		m.Logger().Warn("stream: cannot listen", "transport", kind.String(), "addr", addr, "err", err)
		return nil, err
	}
	if k := len(cfg.Socket.Listeners); k > 0 && k < sockets {
		m.Logger().Info("stream: shards share the listening sockets given", "sockets", k, "shards", sockets, "addr", lns[0].Addr())
	}
	l := &Listener{m: m, cfg: cfg, kind: kind, lns: lns, ch: make(chan nm.Event, acceptQueue), done: make(chan struct{})}
	l.addr = transport.AddrPort(lns[0].Addr())
	l.hooks = streamhook.From(ctx)
	if l.meter = core.MeterFrom(ctx); l.meter == nil {
		l.meter, l.ownMeter = m.NewMeter(kind, core.Listener, cfg.Name, l.addr.String()), true
	}
	l.tls.Store(tlsConf)
	if cfg.MaxConns > 0 {
		l.quota = make(chan struct{}, cfg.MaxConns)
	}
	l.adm = newAdmission(&cfg)
	if l.untrack, err = m.Track(func() { l.Close() }); err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		l.closeMeter()
		return nil, err
	}
	l.refs.Store(int32(len(lns)))
	for i, ln := range lns {
		shard := m.Shard(i % m.Workers())
		l.meter.On(shard).Opened.Add(1)
		l.meter.On(shard).Active.Add(1)
		if err := m.Go(func() { l.acceptLoop(shard, ln) }); err != nil {
			ln.Close()
			l.unref()
		}
	}
	return l, nil
}

// Addr returns the bound address.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Conns returns the channel of accepted connections: one event per
// connection, whose handle the receiver owns (one reference), then, after
// Close or the manager's Close, one final event with nm.ErrCanceled; then it
// is closed. Connections already delivered stay open when the listener
// closes; the manager's Close ends them.
func (l *Listener) Conns() <-chan nm.Event { return l.ch }

// SetTLSConfig replaces the TLS configuration for connections accepted from
// now on. It does nothing on a TCP listener.
func (l *Listener) SetTLSConfig(c *tls.Config) {
	if c != nil && l.tls.Load() != nil {
		l.tls.Store(c)
	}
}

// Close stops accepting, and closes the whole connections given to a
// server of them (DNS over HTTPS) and those not yet handed to their
// consumer (DNS over TCP before its first byte). It does not wait; the
// final event follows on Conns.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.StopAccepting()
		l.closeServed()
	})
	return nil
}

// StopAccepting closes the listening sockets: from now on new connections
// are refused by the kernel, while those already accepted go on (a drain).
// Close still ends them. It is idempotent.
func (l *Listener) StopAccepting() {
	l.stopOnce.Do(func() {
		for _, ln := range l.lns {
			ln.Close()
		}
	})
}

func (l *Listener) unref() {
	if l.refs.Add(-1) == 0 {
		l.untrack()
		l.closeMeter()
		core.Finalize(l.ch, nm.Event{Err: nm.ErrCanceled}, detachRequest)
		if l.hooks.Ended != nil {
			l.hooks.Ended()
		}
	}
}

func (l *Listener) closeMeter() {
	if l.ownMeter {
		l.meter.Close()
	}
}

// Stats returns the statistics of the listener and its connections.
func (l *Listener) Stats() nm.Totals { return nm.Totals(l.meter.Totals()) }

func (l *Listener) acceptLoop(shard *core.Shard, ln *net.TCPListener) {
	shard.Bind()
	defer runtime.UnlockOSThread()
	defer l.unref()
	stats := l.meter.On(shard)
	defer func() {
		stats.Closed.Add(1)
		stats.Active.Add(-1)
	}()
	backoff := time.Duration(0)
	waits := l.quota != nil && !l.cfg.RefuseAtCap
	for {
		if waits {
			select {
			case l.quota <- struct{}{}:
			case <-l.done:
				return
			}
		}
		tc, err := ln.AcceptTCP()
		if err != nil {
			if waits {
				l.release()
			}
			if transport.IsClosed(err) {
				return
			}
			// Out of descriptors, say: back off as net/http does.
			stats.RecvFailed.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		stats.Accepted.Add(1)
		l.accepted(shard, tc)
	}
}

// accepted vets a new connection and starts its goroutine.
func (l *Listener) accepted(shard *core.Shard, tc *net.TCPConn) {
	stats := l.meter.On(shard)
	key, ok := l.admitClient(tc, stats)
	if !ok {
		return
	}
	if l.quota != nil && l.cfg.RefuseAtCap {
		select {
		case l.quota <- struct{}{}:
		default:
			stats.Refused.Add(1)
			l.m.Logger().Warn("stream: connection refused at the listener's cap", "transport", l.kind.String(), "addr", l.addr, "peer", tc.RemoteAddr(), "max", l.cfg.MaxConns)
			tc.Close()
			l.leaveClient(key)
			return
		}
	}
	if !l.vet(tc) {
		stats.Dropped.Add(1)
		tc.Close()
		l.leave(key)
		return
	}
	if l.hooks.Serve != nil {
		stats.Active.Add(1)
		l.refs.Add(1)
		if !l.track(tc) || l.m.Go(func() { l.serve(shard, tc, key) }) != nil {
			l.forget(tc)
			tc.Close()
			l.leave(key)
			stats.Active.Add(-1)
			l.unref()
		}
		return
	}
	stats.Active.Add(1)
	l.refs.Add(1)
	if l.hooks.Consume != nil {
		// Tracked until the consumer has it, so that Close ends it while
		// it is silent, in its handshake or before its PROXY header.
		if !l.track(tc) {
			l.abandon(tc, key, stats)
			return
		}
		if l.tls.Load() == nil {
			// Nothing is made for the connection before its first byte:
			// one that sends nothing costs its socket and goroutine.
			born := time.Now()
			run := func() {
				if c := l.await(shard, tc, key, born); c != nil {
					c.run() // with await's frame gone from the stack
				}
			}
			if l.m.Go(run) != nil {
				l.abandon(tc, key, stats)
			}
			return
		}
	}
	c := l.open(shard, tc, key, time.Now(), stats)
	if c == nil {
		return
	}
	if err := l.m.Go(c.run); err != nil {
		l.forget(tc)
		l.unref()
		c.end()
	}
}

// await runs on the goroutine of a connection a consumer takes: it waits
// for the first byte, the peer's close, or the initial timeout (which the
// connection then reports as its own) before it makes the connection's
// state, which it returns for the goroutine to run; nil if the listener
// closed meanwhile or the state could not be made.
func (l *Listener) await(shard *core.Shard, tc *net.TCPConn, key netip.Prefix, born time.Time) *conn {
	stats := l.meter.On(shard)
	if !l.awaitFirst(tc, born) {
		l.abandon(tc, key, stats)
		return nil
	}
	return l.open(shard, tc, key, born, stats)
}

// awaitFirst waits for tc's first byte, its peer's close or the initial
// timeout; false if the socket was closed meanwhile. The frames under the
// wait are kept small, so that with the deadline's setting (deep in the
// runtime's timers) the goroutine's stack stays at its least, 2 KiB: a
// stack that grew does not shrink back while its goroutine waits.
func (l *Listener) awaitFirst(tc *net.TCPConn, born time.Time) bool {
	if initial := l.cfg.timeouts().Initial; initial > 0 {
		tc.SetReadDeadline(born.Add(initial))
	}
	err := transport.AwaitReadable(tc)
	tc.SetReadDeadline(time.Time{})
	return !transport.IsClosed(err)
}

// abandon ends a connection accepted and counted active, for which no
// state was made; it is tracked no more, if it was.
func (l *Listener) abandon(tc *net.TCPConn, key netip.Prefix, stats *core.Counters) {
	l.forget(tc)
	tc.Close()
	l.leave(key)
	stats.Closed.Add(1)
	stats.Active.Add(-1)
	l.unref()
}

// open makes the state of a connection accepted at born and counted
// active; nil if that failed (the connection is then closed and counted).
func (l *Listener) open(shard *core.Shard, tc *net.TCPConn, key netip.Prefix, born time.Time, stats *core.Counters) *conn {
	var tlsConn *tls.Conn
	var err error
	if conf := l.tls.Load(); conf != nil {
		var w *wire
		if w, err = newWire(tc); err == nil {
			tlsConn = tls.Server(w, conf)
		}
	}
	var c *conn
	if err == nil {
		c, err = newConn(l.m, shard, l.meter, stats, tc, tlsConn, &l.cfg, l.hooks.Consume != nil)
	}
	if err != nil {
		stats.Dropped.Add(1)
		l.abandon(tc, key, stats)
		return nil
	}
	c.server, c.l, c.born = true, l, born
	switch {
	case l.adm != nil:
		c.quota = func() { l.leave(key) }
	case l.quota != nil:
		c.quota = l.release // no key to keep: a smaller closure
	}
	return c
}

// admitClient applies the per-client limits to a connection just
// accepted; a refused one is closed, counted and logged.
func (l *Listener) admitClient(tc *net.TCPConn, stats *core.Counters) (netip.Prefix, bool) {
	if l.adm == nil {
		return netip.Prefix{}, true
	}
	peer := transport.AddrPort(tc.RemoteAddr())
	key, why := l.adm.admit(peer.Addr(), time.Now())
	if why == "" {
		return key, true
	}
	stats.Refused.Add(1)
	l.m.Logger().Warn("stream: connection refused by admission control", "transport", l.kind.String(), "addr", l.addr, "peer", peer, "reason", why)
	tc.Close()
	return key, false
}

// leave gives back a connection's places: its client's and its quota
// token.
func (l *Listener) leave(key netip.Prefix) {
	l.leaveClient(key)
	l.release()
}

// leaveClient gives back a connection's place in its client's limits.
func (l *Listener) leaveClient(key netip.Prefix) {
	if l.adm != nil {
		l.adm.release(key)
	}
}

// release gives a quota token back.
func (l *Listener) release() {
	if l.quota != nil {
		<-l.quota
	}
}

// deliver runs on the connection's goroutine: it completes the TLS
// handshake within the initial timeout and hands the connection to the
// consumer. It returns false if the connection did not make it.
func (l *Listener) deliver(c *conn) bool {
	defer l.unref()
	if l.hooks.Consume != nil {
		defer l.forget(c.tcp) // tracked since accepted
	}
	hdr, err := l.admit(c.tcp, c.tls, c.born, c.stats)
	if err != nil {
		c.h.Detach()
		return false
	}
	c.ready()
	if hdr != nil {
		c.proxy = hdr
		if src, dst, ok := hdr.Addresses(); ok {
			c.h.SetProxied(dst, src)
		}
	}
	for {
		select {
		case <-l.done:
			c.h.Detach()
			return false
		default:
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			c.h.Detach()
			return false
		}
		if l.hooks.Consume != nil {
			if !c.consume(l.hooks.Consume) {
				c.h.Detach()
				return false
			}
			return true
		}
		if core.Deliver(c.shard, l.ch, nm.Event{Handle: nm.Handle(c.h)}, l.done) {
			return true
		}
	}
}

// detachRequest releases the reference a request event carries, for the
// events dropped when a listener's channel is finalized.
func detachRequest(ev nm.Event) {
	if ev.Err == nil && !ev.Handle.IsZero() {
		ev.Handle.Detach()
	}
}
