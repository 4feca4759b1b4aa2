package stream

import (
	"net/netip"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// Defaults of Config.
const (
	DefaultInitialTimeout = 30 * time.Second
	DefaultIdleTimeout    = 30 * time.Second
	DefaultKeepalive      = 30 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
	DefaultBackpressure   = 64 << 10
	DefaultMaxOutput      = 256 << 10
)

// Config configures a listener or a dialed connection. The zero value is
// ready to use; a config must not be modified after use.
type Config struct {
	// Name names a listener in the manager's statistics
	// (nm.Manager.Endpoints). If empty, its address.
	Name string
	// Timeouts of each connection; a zero field takes its default
	// (DefaultInitialTimeout, DefaultIdleTimeout, DefaultKeepalive,
	// DefaultWriteTimeout; no Read timeout), a negative one means none.
	// Handles can change theirs with SetTimeouts.
	Timeouts nm.Timeouts
	// MaxConns caps a listener's concurrent connections; zero means no cap.
	// At the cap the listener stops accepting, so new connections wait in
	// the kernel's backlog, unless RefuseAtCap is set: then they are
	// accepted and closed at once (counted Refused). A listener with a
	// waiting cap uses one listening socket rather than one per shard.
	MaxConns    int
	RefuseAtCap bool
	// Admission control per client, a client being an address prefix of
	// ClientPrefix4 bits for IPv4 (if zero, 24) and ClientPrefix6 for IPv6
	// (if zero, 56); 32 and 128 make it per address. MaxConnsPerClient
	// caps a client's concurrent connections and ClientRate its new
	// connections per second (a token bucket holding a second's worth, at
	// least one); zero means no limit, the default. A connection over a
	// limit is closed as soon as it is accepted, before any read or TLS
	// handshake, counted Refused and logged at debug level. The table of
	// clients holds at most MaxClients entries (if zero, 65536): idle ones
	// are dropped when it is full, and a new client that still finds no
	// room is refused. Listeners of whole connections (DNS over HTTPS) apply them
	// too.
	MaxConnsPerClient            int
	ClientRate                   int
	ClientPrefix4, ClientPrefix6 int
	MaxClients                   int
	// Accept, if set, is called for each new connection before any read or
	// TLS handshake; a non-nil error closes it unseen (counted as dropped).
	// It must be safe for concurrent use.
	Accept func(peer, local netip.AddrPort) error
	// Backpressure is how many unsent bytes make a server connection stop
	// reading until its peer has taken them. If zero, 64 KiB.
	Backpressure int
	// MaxOutput bounds a connection's output: the bytes sent and not yet
	// taken by the kernel (replies queued, and TLS records made). A send
	// that would pass it fails with nm.ErrOutputFull and ends the
	// connection (reset, counted OutputFull, final event
	// nm.ErrOutputFull); a send to an empty output is always taken. If
	// zero, DefaultMaxOutput (256 KiB): a DNS server connection stops
	// reading at Backpressure (64 KiB) unsent, so with replies of up to
	// 8 KiB its 23 requests in flight never reach it; only a peer that
	// reads nothing while taking large replies does.
	MaxOutput int
	// Delay turns Nagle's algorithm back on (TCP_NODELAY is set otherwise).
	Delay bool
	// KeepAlive is the TCP keepalive probe period; zero uses the
	// system's default, negative turns probes off.
	KeepAlive time.Duration
	// Proxy, if set, makes a listener expect a PROXY protocol v2 header at
	// the start of every connection (before TLS, or inside it with
	// ProxyInTLS), from the peers the policy allows; a connection from
	// another peer is refused at once. The header must come within the
	// initial timeout. The accept filter then sees its addresses, and the
	// handle reports them as PeerAddr and LocalAddr (the socket's own are
	// RealPeerAddr and RealLocalAddr). A connection without a valid header
	// is closed unseen, counted as dropped.
	Proxy      *proxyproto.Policy
	ProxyInTLS bool
	// ProxyHeader, on dialed connections, is written first: before the TLS
	// handshake, or as the first bytes inside TLS with ProxyInTLS (see
	// proxyproto.Header.Append).
	ProxyHeader []byte
	// Socket says how a listener binds: address family, port sharing,
	// socket options. The zero value binds the address as written and
	// refuses an address another socket holds (see nm.SocketConfig).
	Socket nm.SocketConfig
}

// Resolved returns the timeouts in force: defaults for the zero fields,
// zero (none) for the negative ones.
func (c *Config) Resolved() nm.Timeouts { return c.timeouts() }

func (c *Config) timeouts() nm.Timeouts {
	t := c.Timeouts
	def := func(d *time.Duration, v time.Duration) {
		switch {
		case *d == 0:
			*d = v
		case *d < 0:
			*d = 0
		}
	}
	def(&t.Initial, DefaultInitialTimeout)
	def(&t.Idle, DefaultIdleTimeout)
	def(&t.Keepalive, DefaultKeepalive)
	def(&t.Write, DefaultWriteTimeout)
	def(&t.Read, 0)
	return t
}

func (c *Config) backpressure() int {
	if c.Backpressure > 0 {
		return c.Backpressure
	}
	return DefaultBackpressure
}

func (c *Config) maxOutput() int {
	if c.MaxOutput > 0 {
		return c.MaxOutput
	}
	return DefaultMaxOutput
}
