package dnsmsg

import (
	"context"
	"net/netip"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/proxyproto"
	"github.com/rainbowduck/netmgr/stream"
)

// ServerConfig configures a listener. The zero value is ready to use; a
// config must not be modified after use.
type ServerConfig struct {
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

func (c *ServerConfig) queue(m *nm.Manager) int {
	if c.Queue > 0 {
		return c.Queue
	}
	return nm.DefaultUDPQueue * m.Workers()
}

// Listener is a DNS server on one address. Its methods are safe for
// concurrent use.
type Listener struct {
	addr  netip.AddrPort
	ch    <-chan nm.Event
	close func() error
}

// ListenUDP serves DNS over UDP on addr, with one socket per shard of m.
// ctx bounds the binding only.
func ListenUDP(ctx context.Context, m *nm.Manager, addr string, cfg ServerConfig) (*Listener, error) {
	l, err := nm.ListenUDP(ctx, m, addr, nm.UDPConfig{
		MaxSize: cfg.MaxUDPSize,
		Batch:   cfg.UDPBatch,
		Queue:   cfg.Queue,
		Filter:  func(b []byte, _ netip.AddrPort) error { return checkRequest(b) },
		Proxy:   cfg.Proxy,
	})
	if err != nil {
		return nil, err
	}
	return &Listener{addr: l.Addr(), ch: l.Datagrams(), close: l.Close}, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Requests returns the channel of requests: one event per DNS message, each
// with a handle to reply on (the receiver owns one reference), then, after
// Close or the manager's Close, one final event with nm.ErrCanceled; then
// the channel is closed.
func (l *Listener) Requests() <-chan nm.Event { return l.ch }

// Close stops the listener; the final event follows on Requests. Close is
// idempotent and does not wait.
func (l *Listener) Close() error { return l.close() }
