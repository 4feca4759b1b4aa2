package dnsmsg

import (
	"context"
	"net/netip"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/proxyproto"
	"github.com/rainbowduck/netmgr/stream"
)

// ServerConfig configures a listener. The zero value is ready to use; a
// config must not be modified after use.
type ServerConfig struct {
	// Name names the listener in the manager's statistics
	// (nm.Manager.Endpoints, nmprom's name label). If empty, its address.
	Name string
	// MaxUDPSize is the largest UDP request accepted; longer ones are dropped
	// and counted. If zero, 4096 bytes.
	MaxUDPSize int
	// UDPBatch is how many datagrams a shard reads per system call. If
	// zero, 32.
	UDPBatch int
	// Queue is the capacity of the request channel; when it is full, new
	// UDP requests are dropped and counted, and TCP and TLS requests are
	// answered at once with the Shed code, counted. If zero, 1024 per
	// shard.
	Queue int
	// Stream configures TCP and TLS listeners: accept filter, connection
	// quota, timeouts, backpressure (see stream.Config; its Consume field is
	// the listener's own and is ignored).
	Stream stream.Config
	// MaxInFlight bounds the requests of one TCP or TLS connection that have
	// been delivered and not yet released (Detach); at the bound the
	// connection reads nothing more until one is. If zero,
	// DefaultMaxInFlight.
	MaxInFlight int
	// Proxy, if set, makes the listener expect a PROXY protocol v2 header
	// from the proxies the policy allows: in front of every UDP datagram,
	// at the start of every TCP or TLS connection (before TLS unless
	// Stream.ProxyInTLS; Stream.Proxy, if set, wins for streams). Request
	// handles then report the client's address as PeerAddr, the proxy's as
	// RealPeerAddr.
	Proxy *proxyproto.Policy
	// RequestTimeout bounds how long a request delivered on a TCP or TLS
	// connection may stay unanswered (its handle not released): past it,
	// its place is reclaimed — it stops counting toward MaxInFlight and no
	// longer holds the connection open, whose idle timer runs again — and
	// it is counted (nm.Totals.Expired). Its handle stays valid for its
	// holder, and a late reply still goes out if the connection is open.
	// So a leaked reference or a stuck consumer cannot pin a connection.
	// If zero, DefaultRequestTimeout (10 s); nm.NoTimeout: no bound.
	RequestTimeout time.Duration
	// Socket says how the listener binds: address family, port sharing,
	// socket options (see nm.SocketConfig), for UDP, and for TCP and TLS
	// unless Stream.Socket is set. The zero value binds the address as
	// written and refuses an address another socket holds.
	Socket nm.SocketConfig
	// MaxBuffered caps the request bytes that a TCP or TLS listener's
	// connections hold, all together, in partial messages (each holds at
	// most one, in a buffer that grows with the bytes received, up to
	// twice them); past it, the connection whose message would grow ends,
	// counted TooLarge. If zero, DefaultMaxBuffered (64 MiB).
	MaxBuffered int
	// Shed is the response code a TCP or TLS request gets at once, without
	// being delivered, when Requests is full: the consumers fall behind,
	// and rather than stall the connection the listener sheds load,
	// counted Shed. If zero, RcodeRefused; RcodeServFail is the other
	// usual choice.
	Shed int
	// Ordered makes TCP and TLS connections answer in order: the next
	// request of a connection is delivered only after the handle of the one
	// before is released (MaxInFlight is then 1).
	Ordered bool
	// QUIC configures DNS over QUIC listeners (see QUICConfig).
	QUIC QUICConfig
}

// stream returns the configuration of a TCP or TLS listener: Stream,
// with Socket unless Stream has its own.
func (c *ServerConfig) stream() stream.Config {
	sc := c.Stream
	if sc.Socket.IsZero() {
		sc.Socket = c.Socket
	}
	if sc.Name == "" {
		sc.Name = c.Name
	}
	return sc
}

func (c *ServerConfig) maxInFlight() int {
	switch {
	case c.Ordered:
		return 1
	case c.MaxInFlight > 0:
		return c.MaxInFlight
	}
	return DefaultMaxInFlight
}

func (c *ServerConfig) requestTimeout() time.Duration {
	if c.RequestTimeout == 0 {
		return DefaultRequestTimeout
	}
	return c.RequestTimeout
}

func (c *ServerConfig) maxBuffered() int {
	if c.MaxBuffered > 0 {
		return c.MaxBuffered
	}
	return DefaultMaxBuffered
}

func (c *ServerConfig) shed() int {
	if c.Shed > 0 {
		return c.Shed
	}
	return RcodeRefused
}

func (c *ServerConfig) queue(m *core.Manager) int {
	if c.Queue > 0 {
		return c.Queue
	}
	return nm.DefaultUDPQueue * m.Workers()
}

// Listener is a DNS server on one address. Its methods are safe for
// concurrent use.
type Listener struct {
	addr     netip.AddrPort
	ch       <-chan nm.Event
	close    func() error
	shutdown func(context.Context) error
	stats    func() nm.Totals
}

// Stats returns the statistics of the listener, its connections and its
// requests (nm.Manager.Endpoints lists them too, with the latencies).
func (l *Listener) Stats() nm.Totals { return l.stats() }

// ListenUDP serves DNS over UDP on addr, with one socket per shard of m.
// ctx bounds the binding only.
func ListenUDP(ctx context.Context, um *nm.Manager, addr string, cfg ServerConfig) (*Listener, error) {
	m := (*core.Manager)(um)
	l, err := nm.ListenUDP(ctx, (*nm.Manager)(m), addr, nm.UDPConfig{
		MaxSize: cfg.MaxUDPSize,
		Batch:   cfg.UDPBatch,
		Queue:   cfg.Queue,
		Filter:  func(b []byte, _ netip.AddrPort) error { return checkRequest(b) },
		Proxy:   cfg.Proxy,
		Socket:  cfg.Socket,
		Name:    cfg.Name,
	})
	if err != nil {
		return nil, err
	}
	return &Listener{addr: l.Addr(), ch: l.Datagrams(), close: l.Close, shutdown: l.Shutdown, stats: l.Stats}, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Requests returns the channel of requests: one event per DNS message, each
// with a handle to reply on (the receiver owns one reference), then, after
// Close or the manager's Close, one final event with nm.ErrCanceled; then
// the channel is closed.
func (l *Listener) Requests() <-chan nm.Event { return l.ch }

// Close stops the listener at once, as an abort: connections are closed
// and replies not yet sent are lost. The final event follows on Requests.
// Close is idempotent and does not wait.
func (l *Listener) Close() error { return l.close() }

// Shutdown drains the listener, as http.Server.Shutdown does: it stops
// taking new requests (UDP: stops reading; TCP and TLS: stops accepting
// connections and reading requests, so a client's further queries on an
// open connection go unanswered and it asks again elsewhere), lets the
// requests already delivered send their replies, then closes the listener
// (TCP and TLS: each connection ends with a FIN after its last reply).
// If ctx ends first, Shutdown closes the listener at once, as Close does,
// and returns ctx's error; otherwise nil. The final event follows on
// Requests as after Close. Shutdown may be called more than once, and
// Close during Shutdown cuts it short.
func (l *Listener) Shutdown(ctx context.Context) error { return l.shutdown(ctx) }
