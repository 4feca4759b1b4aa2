package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
)

// ListenConfig says how ListenUDP and ListenTCP open their sockets. The
// zero value binds the address as written (an IPv4 address, 0.0.0.0
// included, binds IPv4 only; the IPv6 wildcard "[::]" or an empty host
// binds both families where the system allows), and refuses an address
// that another socket already holds.
type ListenConfig struct {
	// Family restricts the sockets to one IP version: "ip4", or "ip6"
	// (IPV6_V6ONLY set: "[::]" then takes no IPv4). If empty, the address
	// decides, as above.
	Family string
	// SharePort lets the sockets bind an address that other sockets hold
	// with SO_REUSEPORT (this process's or another's of the same user), and
	// lets such sockets join later: the kernel spreads the traffic over all
	// of them. Meant for handing a port over on restart: the new process
	// binds with SharePort while the old one, bound with SharePort too,
	// still serves, then the old one closes. If false, binding fails with
	// an error matching syscall.EADDRINUSE when any socket holds the
	// address.
	SharePort bool
	// Control, if set, is called on each socket before it is bound, after
	// the library's own options, to set options such as SO_BINDTODEVICE,
	// SO_RCVBUF or IP_FREEBIND. It is called for the probe socket too.
	Control func(network, address string, c syscall.RawConn) error
	// PacketConns (for ListenUDP, each a *net.UDPConn) and Listeners (for
	// ListenTCP, each a *net.TCPListener), if set, are sockets already
	// bound, used instead of binding the address: the caller's own, or
	// from files (net.FilePacketConn, net.FileListener) such as systemd
	// passes. The address, Family, SharePort and Control are then ignored.
	// Fewer sockets than asked for are repeated, so that shards share
	// them; more are all returned.
	PacketConns []net.PacketConn
	Listeners   []net.Listener
}

// ListenUDP returns n UDP sockets bound to addr (n < 1 counts as 1), for
// n shards: n sockets bound with SO_REUSEPORT (SO_REUSEPORT_LB on FreeBSD)
// where ReusePortSupported, so that the kernel spreads the traffic over
// them; elsewhere one socket, repeated n times, which the shards share. If
// addr has port 0, the system picks a free port, and every socket binds
// it. The sockets lc gives, if any, are returned instead (see ListenConfig).
func ListenUDP(ctx context.Context, addr string, n int, lc ListenConfig) ([]*net.UDPConn, error) {
	if len(lc.PacketConns) > 0 {
		return given[*net.UDPConn](lc.PacketConns, n)
	}
	return bindN("udp", addr, n, lc, func(nc *net.ListenConfig, network, addr string) (*net.UDPConn, string, error) {
		pc, err := nc.ListenPacket(ctx, network, addr)
		if err != nil {
			return nil, "", err
		}
		return pc.(*net.UDPConn), pc.LocalAddr().String(), nil
	})
}

// ListenTCP returns n TCP listening sockets bound to addr, as ListenUDP
// does.
func ListenTCP(ctx context.Context, addr string, n int, lc ListenConfig) ([]*net.TCPListener, error) {
	if len(lc.Listeners) > 0 {
		return given[*net.TCPListener](lc.Listeners, n)
	}
	return bindN("tcp", addr, n, lc, func(nc *net.ListenConfig, network, addr string) (*net.TCPListener, string, error) {
		l, err := nc.Listen(ctx, network, addr)
		if err != nil {
			return nil, "", err
		}
		return l.(*net.TCPListener), l.Addr().String(), nil
	})
}

// given returns the sockets the caller gave, as S, repeated up to n.
func given[S any, G any](socks []G, n int) ([]S, error) {
	out := make([]S, 0, max(n, len(socks)))
	for _, g := range socks {
		s, ok := any(g).(S)
		if !ok {
			var want S
			return nil, errf("given socket is a %T; want a %T", g, want)
		}
		out = append(out, s)
	}
	for i := len(socks); i < n; i++ {
		out = append(out, out[i%len(socks)])
	}
	return out, nil
}

type binder[S io.Closer] func(nc *net.ListenConfig, network, addr string) (S, string, error)

// bindN binds n sockets of proto ("udp" or "tcp") to addr with bind, or
// one repeated n times where !ReusePortSupported. Unless lc.SharePort, a
// probe socket without SO_REUSEPORT first checks that nobody holds the
// address (and picks the port when it is 0); the sockets then bind the
// probe's address with SO_REUSEPORT when there are several.
func bindN[S io.Closer](proto, addr string, n int, lc ListenConfig, bind binder[S]) ([]S, error) {
	n = max(n, 1)
	k := n // distinct sockets
	if !ReusePortSupported {
		k = 1
	}
	network, err := networkOf(proto, addr, lc.Family)
	if err != nil {
		return nil, err
	}
	if !lc.SharePort {
		if addr, err = probe(network, addr, lc, bind); err != nil {
			return nil, err
		}
	}
	nc := net.ListenConfig{Control: controls(lc.Control, k > 1 || lc.SharePort)}
	socks := make([]S, 0, n)
	for i := 0; i < k; i++ {
		s, bound, err := bind(&nc, network, addr)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, inUse(addr, err)
		}
		socks = append(socks, s)
		addr = bound
	}
	for i := k; i < n; i++ {
		socks = append(socks, socks[0])
	}
	return socks, nil
}

// probe binds addr alone, without SO_REUSEPORT, and closes it: it fails
// if any socket holds addr. It returns the address it got.
func probe[S io.Closer](network, addr string, lc ListenConfig, bind binder[S]) (string, error) {
	nc := net.ListenConfig{Control: controls(lc.Control, false)}
	s, bound, err := bind(&nc, network, addr)
	if err != nil {
		return "", inUse(addr, err)
	}
	s.Close()
	return bound, nil
}

// inUse explains an error caused by EADDRINUSE; it still matches
// syscall.EADDRINUSE.
func inUse(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return errf("%s is held by another socket, of this process or another (SharePort shares it on purpose): %w", addr, err)
	}
	return err
}

// controls returns the Control of a net.ListenConfig: SO_REUSEPORT if
// share, then the user's hook.
func controls(user func(network, address string, c syscall.RawConn) error, share bool) func(network, address string, c syscall.RawConn) error {
	if !share {
		return user
	}
	return func(network, address string, c syscall.RawConn) error {
		if err := reusePortControl(network, address, c); err != nil {
			return err
		}
		if user != nil {
			return user(network, address, c)
		}
		return nil
	}
}

// networkOf returns the network to bind addr with: proto with "4" or "6"
// for a Family, or for an IPv4 literal address (so that 0.0.0.0 binds
// IPv4 only); proto alone otherwise (dual-stack for [::] and an empty
// host).
func networkOf(proto, addr, family string) (string, error) {
	switch family {
	case "ip4":
		return proto + "4", nil
	case "ip6":
		return proto + "6", nil
	case "":
	default:
		return "", errf("unknown address family %q (want \"ip4\", \"ip6\" or empty)", family)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", errf("listen address %q: %w", addr, err)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return proto + "4", nil
	}
	return proto, nil
}
