package dnsmsg

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// Defaults of HTTPConfig.
const (
	DefaultMaxStreams     = 100
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxURI         = 16 << 10
	DefaultMaxOutput      = 256 << 10
	DefaultMaxBodyBytes   = 256 << 10
	// DefaultMaxListenerBodyBytes is HTTPConfig.MaxListenerBodyBytes's
	// default.
	DefaultMaxListenerBodyBytes = 32 << 20
)

// HTTPConfig configures a DNS over HTTPS listener. The zero value is ready
// to use; a config must not be modified after use.
type HTTPConfig struct {
	// Name names the listener in the manager's statistics
	// (nm.Manager.Endpoints, nmprom's name label). If empty, its address.
	Name string
	// Stream configures the connections: accept filter, quota (MaxConns,
	// RefuseAtCap), TCP options, and timeouts: Initial bounds the TLS
	// handshake, the first request and each request's body, Idle the time
	// a connection with no request open is kept, Write each write (a peer
	// that does not read is cut off). Consume and Serve are the listener's.
	Stream stream.Config
	// MaxStreams caps the concurrent HTTP/2 streams of one connection; the
	// peer is told so and streams beyond it are refused. If zero,
	// DefaultMaxStreams (100).
	MaxStreams int
	// MaxInFlight caps the requests of one connection that have been
	// delivered and not yet answered or released; at the cap the next
	// request waits. If zero, MaxStreams.
	MaxInFlight int
	// MaxHeaderBytes caps a request's header block; a larger one gets 431.
	// If zero, DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int
	// MaxURI caps the request URI; a longer one gets 414. If zero,
	// DefaultMaxURI (16 KiB: room for a GET query of 12 KiB; larger
	// queries are sent with POST).
	MaxURI int
	// HTTP1 also serves HTTP/1.1: over TLS when the client offers ALPN
	// "http/1.1" (or none), in cleartext when its first bytes are not the
	// HTTP/2 preface. Off: only HTTP/2 is served.
	HTTP1 bool
	// MaxOutput caps the bytes an HTTP/2 connection holds for its peer:
	// replies (those the peer's flow-control window holds back too), error
	// statuses, resets and control frames, written or not yet. A connection
	// past it is cut off (its socket closed): counted Floods when the
	// output was provoked by the peer's frames (resets, statuses, ACKs),
	// OutputFull when a reply passed it, which then fails with
	// nm.ErrOutputFull, as do the replies in progress. If zero,
	// DefaultMaxOutput (256 KiB).
	MaxOutput int
	// MaxBodyBytes caps the request body bytes one connection buffers in
	// bodies not complete yet (HTTP/2 streams; over HTTP/1.1 a body is at
	// most 65535 bytes anyway). A stream whose body would pass it is
	// answered 413, counted TooLarge. Bodies take memory as their bytes
	// arrive, never from a declared content-length. If zero,
	// DefaultMaxBodyBytes (256 KiB).
	MaxBodyBytes int
	// MaxListenerBodyBytes caps the same over all the listener's
	// connections, HTTP/1.1 included; past it, 413, counted TooLarge. If
	// zero, DefaultMaxListenerBodyBytes (32 MiB).
	MaxListenerBodyBytes int
	// Queue is the capacity of each endpoint's request channel; when it is
	// full (the consumers fall behind), a request is answered ShedStatus at
	// once, counted Shed: no connection waits for a consumer. If zero, 1024
	// per shard.
	Queue int
	// ShedStatus is the HTTP status (400-599) that answers a request whose
	// endpoint's channel is full. If zero, 503 (Service Unavailable).
	ShedStatus int
	// RequestTimeout bounds how long a delivered request may stay
	// unanswered: past it, its place in MaxInFlight comes back and it is
	// counted Expired. Over HTTP/2 its stream is reset (INTERNAL_ERROR) and
	// it no longer keeps the connection from its idle timeout; over
	// HTTP/1.1, which cannot reset one request, it is answered 503 (Service
	// Unavailable) and the connection goes on. Its handle stays valid for
	// its holder, whose late reply fails with nm.ErrClosed (and
	// nm.ErrTimedOut). If zero, DefaultRequestTimeout (10 s); nm.NoTimeout:
	// no bound.
	RequestTimeout time.Duration
}

func (c *HTTPConfig) maxStreams() int {
	if c.MaxStreams > 0 {
		return c.MaxStreams
	}
	return DefaultMaxStreams
}

func (c *HTTPConfig) maxInFlight() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return c.maxStreams()
}

func (c *HTTPConfig) maxHeaderBytes() int {
	if c.MaxHeaderBytes > 0 {
		return c.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func (c *HTTPConfig) maxOutput() int {
	if c.MaxOutput > 0 {
		return c.MaxOutput
	}
	return DefaultMaxOutput
}

func (c *HTTPConfig) maxBodyBytes() int {
	if c.MaxBodyBytes > 0 {
		return c.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

func (c *HTTPConfig) maxListenerBodyBytes() int {
	if c.MaxListenerBodyBytes > 0 {
		return c.MaxListenerBodyBytes
	}
	return DefaultMaxListenerBodyBytes
}

func (c *HTTPConfig) requestTimeout() time.Duration {
	if c.RequestTimeout == 0 {
		return DefaultRequestTimeout
	}
	return max(c.RequestTimeout, 0)
}

func (c *HTTPConfig) shedStatus() int {
	if c.ShedStatus >= 400 && c.ShedStatus <= 599 {
		return c.ShedStatus
	}
	return http.StatusServiceUnavailable
}

func (c *HTTPConfig) maxURI() int {
	if c.MaxURI > 0 {
		return c.MaxURI
	}
	return DefaultMaxURI
}

func (c *HTTPConfig) queue(m *core.Manager) int {
	if c.Queue > 0 {
		return c.Queue
	}
	return nm.DefaultUDPQueue * m.Workers()
}

// HTTPListener is a DNS over HTTPS server on one address: each of its
// endpoints delivers its requests on a channel of its own. Its methods are
// safe for concurrent use.
type HTTPListener struct {
	s *httpServer
}

// Stats returns the statistics of the listener, its connections and its
// requests (nm.Manager.Endpoints lists them too, with the latencies).
func (l *HTTPListener) Stats() nm.Totals { return nm.Totals(l.s.meter.Totals()) }

// ListenHTTPS serves DNS over HTTPS (RFC 8484) on addr: HTTP/2 over TLS
// (ALPN "h2"), and HTTP/1.1 if cfg.HTTP1 is set. eps holds the endpoint
// paths and their request channels; nil means one endpoint, DefaultPath.
// If tlsConf has no NextProtos, the listener offers "h2" (and "http/1.1"
// with cfg.HTTP1). ctx bounds the binding only.
func ListenHTTPS(ctx context.Context, um *nm.Manager, addr string, tlsConf *tls.Config, eps *Endpoints, cfg HTTPConfig) (*HTTPListener, error) {
	m := (*core.Manager)(um)
	if tlsConf == nil {
		return nil, errors.New("dnsmsg: ListenHTTPS needs a tls.Config")
	}
	if len(tlsConf.NextProtos) == 0 {
		tlsConf = tlsConf.Clone()
		tlsConf.NextProtos = []string{http2.NextProtoTLS}
		if cfg.HTTP1 {
			tlsConf.NextProtos = append(tlsConf.NextProtos, "http/1.1")
		}
	}
	return listenHTTP(ctx, m, addr, tlsConf, eps, cfg)
}

// ListenHTTP serves DNS over cleartext HTTP/2 (prior knowledge, no
// upgrade), and HTTP/1.1 if cfg.HTTP1 is set: for servers behind a proxy
// that ends TLS.
func ListenHTTP(ctx context.Context, um *nm.Manager, addr string, eps *Endpoints, cfg HTTPConfig) (*HTTPListener, error) {
	m := (*core.Manager)(um)
	return listenHTTP(ctx, m, addr, nil, eps, cfg)
}

func listenHTTP(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, eps *Endpoints, cfg HTTPConfig) (*HTTPListener, error) {
	if eps == nil {
		var err error
		if eps, err = NewEndpoints(cfg.queue(m)); err != nil {
			return nil, err
		}
	}
	s := newHTTPServer(m, cfg)
	if !eps.bind() {
		s.meter.Close()
		return nil, errors.New("dnsmsg: endpoints already used by a listener")
	}
	s.eps.Store(eps)
	sc := cfg.Stream
	// The connections count on the listener's meter too, under HTTP.
	var err error
	hooked := streamhook.With(core.WithMeter(ctx, s.meter), streamhook.Hooks{Serve: s})
	if s.sl, err = listenStreamOrTLS(hooked, m, addr, tlsConf, sc); err != nil {
		s.meter.Close()
		eps.end()
		return nil, err
	}
	s.meter.SetAddr(s.sl.Addr().String())
	l := &HTTPListener{s: s}
	s.undrain = m.TrackDrain(l.Shutdown)
	if s.untrack, err = m.Track(func() { s.close() }); err != nil {
		s.undrain()
		s.sl.Close()
		s.meter.Close()
		eps.end()
		return nil, err
	}
	if cfg.HTTP1 {
		if err := m.Go(s.serveHTTP1); err != nil {
			s.close()
			return nil, err
		}
	}
	return l, nil
}

// Addr returns the address the listener is bound to.
func (l *HTTPListener) Addr() netip.AddrPort { return l.s.sl.Addr() }

// Endpoints returns the endpoints served now.
func (l *HTTPListener) Endpoints() *Endpoints { return l.s.eps.Load() }

// SetEndpoints replaces the endpoints served: requests from now on go to
// eps; the old set's channels get their final event (nm.ErrCanceled) once
// the requests being delivered to them are. eps must not have been given
// to a listener before.
func (l *HTTPListener) SetEndpoints(eps *Endpoints) error {
	if eps == nil || !eps.bind() {
		return errors.New("dnsmsg: endpoints already used by a listener")
	}
	l.s.mu.Lock()
	if l.s.closed {
		l.s.mu.Unlock()
		eps.end()
		return nm.ErrClosed
	}
	old := l.s.eps.Swap(eps)
	l.s.mu.Unlock()
	old.end()
	return nil
}

// SetTLSConfig replaces the TLS configuration for connections accepted from
// now on.
func (l *HTTPListener) SetTLSConfig(c *tls.Config) { l.s.sl.SetTLSConfig(c) }

// Close stops the listener and closes its connections; every endpoint
// channel gets its final event (nm.ErrCanceled) once the requests being
// delivered are. Requests already delivered fail their Send. Close is
// idempotent and does not wait.
func (l *HTTPListener) Close() error { return l.s.close() }

// httpServer is the DNS side of a DoH listener: it serves the HTTP/2 (and
// HTTP/1.1) connections the stream listener hands it, and turns each
// request into a request handle on an endpoint's channel.
type httpServer struct {
	m       *core.Manager
	meter   *core.Meter // the listener's, its connections' and requests'
	cfg     HTTPConfig
	sl      *stream.Listener
	base    *http.Server // HTTP/1.1
	eps     atomic.Pointer[Endpoints]
	body    atomic.Int64  // body bytes buffered in bodies not complete yet, all connections
	initial time.Duration // bounds the first request and each body; 0: none
	idle    time.Duration // bounds the time a connection has no request open; 0: none
	write   time.Duration // bounds each HTTP/1.1 response's write; 0: none
	reqs    sync.Pool     // *httpRequest, each with its handle
	h1conns chan net.Conn
	// h1closed is closed (once, h1once) by the HTTP/1.1 listener's Close,
	// which net/http's Shutdown calls: Accept returns.
	h1closed chan struct{}
	h1once   sync.Once
	// stop is closed by close: handlers waiting for a reply give up.
	stop    chan struct{}
	untrack func()
	undrain func() // unregisters the listener from the manager's Shutdown

	// draining is set by drain: HTTP/2 connections send GOAWAY, take no
	// new stream and end once none is open.
	draining atomic.Bool

	mu     sync.Mutex
	closed bool                 // guarded by mu
	conns  map[*h2conn]struct{} // the HTTP/2 connections being served; guarded by mu
	// gone, set by waitConns, is closed by untrackConn when the last
	// HTTP/2 connection ends; guarded by mu.
	gone chan struct{}
}

func newHTTPServer(m *core.Manager, cfg HTTPConfig) *httpServer {
	t := cfg.Stream.Resolved()
	s := &httpServer{m: m, cfg: cfg, meter: m.NewMeter(core.HTTP, core.Listener, cfg.Name, ""), initial: t.Initial, idle: t.Idle, write: t.Write, stop: make(chan struct{}), h1conns: make(chan net.Conn), h1closed: make(chan struct{})}
	s.base = &http.Server{
		Handler:           s,
		MaxHeaderBytes:    cfg.maxHeaderBytes(),
		ReadHeaderTimeout: t.Initial,
		IdleTimeout:       t.Idle,
		ErrorLog:          discardLog,
	}
	return s
}

func (s *httpServer) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.sl.Close()
	s.eps.Load().end()
	s.untrack()
	s.undrain()
	s.meter.Close()
	return nil
}

// httpConn is what a DoH server knows of one connection; requests find it
// in their context.
type httpConn struct {
	shard               *core.Shard
	local, peer         netip.AddrPort // reported: a PROXY header's, or the socket's
	realLocal, realPeer netip.AddrPort
	// slots holds a token per request delivered and not yet done: the
	// in-flight bound.
	slots chan struct{}
}

type connKey struct{}

// ServeConn implements streamhook.Server: it serves one connection until it
// ends.
func (s *httpServer) ServeConn(c *streamhook.ServedConn) {
	hc := &httpConn{
		shard:     c.Shard,
		local:     c.Local,
		peer:      c.Peer,
		realLocal: c.RealLocal,
		realPeer:  c.RealPeer,
		slots:     make(chan struct{}, s.cfg.maxInFlight()),
	}
	nc := c.Conn
	h2, sniffed := false, false
	var first []byte
	tc, isTLS := nc.(*tls.Conn)
	if isTLS {
		h2 = tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS
	} else {
		var err error
		if h2, first, err = s.sniff(nc); err != nil {
			return
		}
		sniffed = true
	}
	switch {
	case h2:
		s.serveH2(hc, nc, isTLS, sniffed)
	case s.cfg.HTTP1:
		s.handOff(&h1Conn{Conn: nc, hc: hc, stats: s.meter.On(hc.shard), first: first, closed: make(chan struct{})})
	}
}

// preface is what a cleartext HTTP/2 client sends first (RFC 9113 3.4).
const preface = http2.ClientPreface

// sniff reads a cleartext connection's first bytes, within the initial
// timeout, until they either are the HTTP/2 preface (h2 true, first nil)
// or differ from it (first: the bytes read, for HTTP/1.1).
func (s *httpServer) sniff(nc net.Conn) (h2 bool, first []byte, err error) {
	if d := s.initial; d > 0 {
		nc.SetReadDeadline(time.Now().Add(d))
		defer nc.SetReadDeadline(time.Time{})
	}
	buf := make([]byte, len(preface))
	n := 0
	for n < len(buf) {
		m, err := nc.Read(buf[n:])
		if err != nil {
			return false, nil, err
		}
		if string(buf[n:n+m]) != preface[n:n+m] {
			return false, buf[:n+m], nil
		}
		n += m
	}
	return true, nil, nil
}

// discardLog keeps net/http from logging every peer's mistakes.
var discardLog = log.New(io.Discard, "", 0)
