package nm

import (
	"net"
	"syscall"
)

// SocketConfig says how a listener opens its sockets (UDPConfig.Socket,
// stream.Config.Socket, dnsmsg.ServerConfig.Socket). The zero value binds
// the address as written, one socket per shard where the platform spreads
// traffic over them (see Platforms in the package documentation), and refuses an address that
// any other socket holds.
//
// Family: an IPv4 address, 0.0.0.0 included, binds IPv4 only; an IPv6
// address binds IPv6, and "[::]" or an empty host (":53") binds both
// families where the system allows (IPv4 clients then appear unmapped).
type SocketConfig struct {
	// Family restricts the listener to one IP version: "ip4", or "ip6"
	// (IPV6_V6ONLY is set: "[::]" then takes no IPv4). If empty, the
	// address decides, as above.
	Family string
	// SharePort lets the listener bind an address that other sockets hold
	// with SO_REUSEPORT (this process's or another process's of the same
	// user), and lets such sockets join it later: the kernel spreads the
	// traffic over all of them. It is meant for handing a port over on
	// restart: the new process listens with SharePort while the old one,
	// which listened with SharePort too, still serves; then the old one
	// stops. If false, listening fails with an error matching
	// syscall.EADDRINUSE when any socket holds the address, even one of
	// this process.
	SharePort bool
	// Control, if set, is called on each socket before it is bound, after
	// the library's own options: for options such as SO_BINDTODEVICE,
	// SO_RCVBUF and SO_SNDBUF, or IP_FREEBIND (binding an address that is
	// not up yet). It may be called on a probe socket that is closed at
	// once. It must be safe for concurrent use.
	Control func(network, address string, c syscall.RawConn) error
	// PacketConns (UDP listeners; each must be a *net.UDPConn) and
	// Listeners (TCP, TLS and HTTP listeners; each a *net.TCPListener), if
	// set, are sockets already bound that the listener serves instead of
	// binding its address: the caller's own, or sockets a parent process or
	// systemd passed on (see net.FilePacketConn and net.FileListener). The
	// address, Family, SharePort and Control are then ignored. The
	// listener owns them: its Close closes them. With fewer sockets than
	// shards, shards share them (a UDP socket gets one reader per shard;
	// a TCP socket one accept loop per shard) and the manager logs it;
	// the kernel then cannot spread traffic by socket. A config holding
	// sockets serves one listener.
	PacketConns []net.PacketConn
	Listeners   []net.Listener
}

// IsZero reports whether c is the zero value (all defaults).
func (c SocketConfig) IsZero() bool {
	return c.Family == "" && !c.SharePort && c.Control == nil && c.PacketConns == nil && c.Listeners == nil
}
