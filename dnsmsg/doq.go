package dnsmsg

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
)

// ListenQUIC serves DNS over QUIC (DoQ, RFC 9250) on addr: one query per
// client-initiated bidirectional stream, with a 2-byte length prefix, its
// reply and FIN on the same stream. Requests from every connection arrive
// on Requests, as UDP ones do, with message ID 0 as the client sent it. If
// tlsConf has no NextProtos, the listener offers ALPN "doq". cfg.QUIC
// holds the DoQ settings; cfg.Queue sizes the channel. ctx bounds the
// binding only. See the package documentation (DNS over QUIC).
func ListenQUIC(ctx context.Context, um *nm.Manager, addr string, tlsConf *tls.Config, cfg ServerConfig) (*Listener, error) {
	m := (*core.Manager)(um)
	if tlsConf == nil {
		return nil, errors.New("dnsmsg: ListenQUIC needs a tls.Config")
	}
	if len(tlsConf.NextProtos) == 0 {
		tlsConf = tlsConf.Clone()
		tlsConf.NextProtos = []string{ALPNDoQ}
	}
	conns, err := transport.ListenUDP(ctx, addr, m.Workers(), transport.ListenConfig(cfg.Socket))
	if err != nil {
		m.Shard(0).Counters(core.QUIC).BindFailed.Add(1)
		m.Logger().Warn("dnsmsg: cannot listen", "transport", nm.QUIC.String(), "addr", addr, "err", err)
		return nil, err
	}
	s := newDoQServer(m, cfg)
	s.meter.SetAddr(transport.AddrPort(conns[0].LocalAddr()).String())
	if err := s.start(conns, tlsConf); err != nil {
		return nil, err
	}
	return &Listener{addr: transport.AddrPort(conns[0].LocalAddr()), ch: s.ch, close: s.close, shutdown: s.shutdown,
		stats: func() nm.Totals { return nm.Totals(s.meter.Totals()) }}, nil
}

// quicListener is what a DoQ server needs of quic-go's Listener and
// EarlyListener.
type quicListener interface {
	Accept(context.Context) (*quic.Conn, error)
	Close() error
}

// doqServer is a DoQ listener: a QUIC transport and listener per shard,
// each over its own SO_REUSEPORT socket, and the one channel of requests
// their connections share.
type doqServer struct {
	m     *core.Manager
	meter *core.Meter // the listener's, its connections' and requests'
	cfg   QUICConfig
	// requestTimeout bounds how long a delivered request may hold its
	// stream's place unanswered (ServerConfig.RequestTimeout); zero: no
	// bound.
	requestTimeout time.Duration
	// ch carries the requests. Senders: the stream readers, without
	// waiting (a full channel sheds the request with REFUSED, counted
	// Shed); the finisher, after every reader has ended, sends the final
	// event and closes it.
	ch      chan nm.Event
	handles core.HandlePool // released request handles, with their buffers

	socks []*net.UDPConn
	trs   []*quic.Transport
	lns   []quicListener
	// ctx is canceled by close: accept loops stop.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the goroutines that may deliver on ch: accept loops,
	// connection loops, stream readers, plus one for the listener itself
	// until close.
	wg sync.WaitGroup

	// conns counts the connections admitted (ConnContext) and not yet
	// ended, for MaxConns and RetryAbove.
	conns atomic.Int64

	mu      sync.Mutex
	live    map[*doqConn]struct{} // connections accepted; guarded by mu
	perAddr map[netip.Addr]int    // admitted connections per client IP; guarded by mu
	closed  bool                  // guarded by mu
	drain   connDrain[*doqConn]   // guarded by mu
	untrack func()
	undrain func()
}

func newDoQServer(m *core.Manager, cfg ServerConfig) *doqServer {
	s := &doqServer{
		m:              m,
		meter:          m.NewMeter(core.QUIC, core.Listener, cfg.Name, ""),
		cfg:            cfg.QUIC,
		requestTimeout: max(cfg.requestTimeout(), 0),
		ch:             make(chan nm.Event, cfg.queue(m)),
		handles:        core.HandlePool{Max: cfg.queue(m)},
		live:           make(map[*doqConn]struct{}),
		perAddr:        make(map[netip.Addr]int),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// start runs a QUIC transport and listener on each socket (socket i is
// shard i's) and their accept loops.
func (s *doqServer) start(socks []*net.UDPConn, tlsConf *tls.Config) error {
	s.socks = socks
	qc := s.cfg.quic()
	steered := attachSteering(socks)
	for i, sock := range socks {
		tr := &quic.Transport{
			Conn:                sock,
			ConnContext:         s.admit,
			VerifySourceAddress: s.verifySource,
		}
		if steered {
			tr.ConnectionIDGenerator = shardCIDs{shard: byte(i)}
		}
		s.trs = append(s.trs, tr)
		ln, err := s.listen(tr, tlsConf, qc)
		if err != nil {
			s.teardown()
			return err
		}
		s.lns = append(s.lns, ln)
		st := s.meter.On(s.m.Shard(i % s.m.Workers()))
		st.Opened.Add(1)
		st.Active.Add(1)
	}
	// What close undoes is in place before Track: the manager may close
	// the listener as soon as it is tracked.
	s.undrain = s.m.TrackDrain(s.shutdown)
	s.wg.Add(1 + len(s.lns))
	var err error
	if s.untrack, err = s.m.Track(func() { s.close() }); err != nil {
		s.undrain()
		s.wg.Add(-(1 + len(s.lns)))
		s.teardown()
		return err
	}
	for i, ln := range s.lns {
		shard := s.m.Shard(i % s.m.Workers())
		if err := s.m.Go(func() { s.acceptLoop(ln, shard) }); err != nil {
			s.wg.Done()
		}
	}
	return nil
}

func (s *doqServer) listen(tr *quic.Transport, tlsConf *tls.Config, qc *quic.Config) (quicListener, error) {
	if s.cfg.Allow0RTT {
		return tr.ListenEarly(tlsConf, qc)
	}
	return tr.Listen(tlsConf, qc)
}

// teardown closes the listeners, transports and sockets.
func (s *doqServer) teardown() {
	s.cancel()
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, tr := range s.trs {
		tr.Close()
	}
	for i, sock := range s.socks {
		sock.Close()
		if i < len(s.lns) {
			st := s.meter.On(s.m.Shard(i % s.m.Workers()))
			st.Closed.Add(1)
			st.Active.Add(-1)
		}
	}
	s.meter.Close()
}

// verifySource switches QUIC Retry on while the listener is loaded.
func (s *doqServer) verifySource(net.Addr) bool {
	return s.conns.Load() >= int64(s.cfg.retryAbove())
}

// doqExcess marks, in a connection's context, a connection admitted over
// a cap: it is ended with DOQ_EXCESSIVE_LOAD once accepted.
type doqExcess struct{}

// errDoQRefused makes quic-go refuse a connection before its handshake.
var errDoQRefused = errors.New("dnsmsg: DoQ listener full")

// admit is the transports' ConnContext: it counts a new connection
// against the caps, and releases it when the connection's context ends
// (the connection closed, or its handshake failed).
func (s *doqServer) admit(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	addr := transport.AddrPort(ci.RemoteAddr).Addr().Unmap()
	total := s.conns.Add(1)
	s.mu.Lock()
	s.perAddr[addr]++
	n := s.perAddr[addr]
	s.mu.Unlock()
	release := func() {
		s.conns.Add(-1)
		s.mu.Lock()
		if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
			delete(s.perAddr, addr)
		}
		s.mu.Unlock()
	}
	maxConns := int64(s.cfg.maxConns())
	if total > maxConns+max(maxConns/8, 16) {
		release()
		s.m.Logger().Warn("dnsmsg: DoQ connection refused before its handshake: far over the connection cap", "peer", ci.RemoteAddr, "conns", total-1, "max", maxConns)
		return ctx, errDoQRefused
	}
	context.AfterFunc(ctx, release)
	if total > maxConns || n > s.cfg.maxConnsPerAddr() {
		ctx = context.WithValue(ctx, doqExcess{}, true)
	}
	return ctx, nil
}

// acceptLoop takes the connections of one shard's listener.
func (s *doqServer) acceptLoop(ln quicListener, shard *core.Shard) {
	defer s.wg.Done()
	stats := s.meter.On(shard)
	for {
		qc, err := ln.Accept(s.ctx)
		if err != nil {
			return
		}
		if qc.Context().Value(doqExcess{}) != nil {
			stats.Refused.Add(1)
			s.m.Logger().Warn("dnsmsg: DoQ connection refused: excessive load", "peer", qc.RemoteAddr(), "max", s.cfg.maxConns(), "maxPerAddr", s.cfg.maxConnsPerAddr())
			qc.CloseWithError(DoQExcessiveLoad, "too many connections")
			continue
		}
		c := newDoQConn(s, qc, shard)
		if !s.register(c) {
			qc.CloseWithError(DoQNoError, "")
			continue
		}
		stats.Accepted.Add(1)
		stats.Active.Add(1)
		s.wg.Add(2)
		go c.loop()
		go c.watchUni()
	}
}

// register adds a connection to the live set, unless the listener is
// closing or draining.
func (s *doqServer) register(c *doqConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.drain.draining {
		return false
	}
	s.live[c] = struct{}{}
	return true
}

// unregister removes an ended connection.
func (s *doqServer) unregister(c *doqConn) {
	s.mu.Lock()
	delete(s.live, c)
	s.drain.gone(s.live)
	s.mu.Unlock()
}

// close stops the listener at once: connections are closed with
// DOQ_NO_ERROR; the final event follows once every reader has ended.
func (s *doqServer) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	live := make([]*doqConn, 0, len(s.live))
	for c := range s.live {
		live = append(live, c)
	}
	s.mu.Unlock()
	s.undrain()
	for _, c := range live {
		c.qc.CloseWithError(DoQNoError, "")
	}
	s.teardown()
	s.wg.Done() // the listener's own count
	if s.m.Go(s.finish) != nil {
		// The manager is closing: its Close waits here for the goroutines
		// of the listener, so that none outlives it.
		s.finish()
	}
	return nil
}

// finish sends the final event once nothing else can send on ch.
func (s *doqServer) finish() {
	s.wg.Wait()
	s.untrack()
	s.handles.Close()
	core.Finalize(s.ch, nm.Event{Err: nm.ErrCanceled}, detachRequest)
}

// shutdown drains the listener: no new connection or stream is taken;
// each connection is closed with DOQ_NO_ERROR once the streams it had
// accepted are answered; when every connection has ended, or ctx ends
// first, the listener closes.
func (s *doqServer) shutdown(ctx context.Context) (err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	first, drained, live := s.drain.begin(s.live)
	s.mu.Unlock()
	if first {
		ended := logDrain(s.m, core.QUIC, s.socks[0].LocalAddr(), len(live))
		defer func() { ended(err) }()
		for _, ln := range s.lns {
			ln.Close()
		}
		for _, c := range live {
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
