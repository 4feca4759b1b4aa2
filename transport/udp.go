package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ListenUDP binds n UDP sockets to addr (network "udp", "udp4" or "udp6").
// Where the platform supports SO_REUSEPORT every socket is bound to the same
// address and the kernel spreads flows over them; elsewhere, or when n is 1,
// a single socket is returned. If addr has port 0, the first socket picks a
// port and the others bind to the same one.
func ListenUDP(ctx context.Context, network, addr string, n int) ([]*net.UDPConn, error) {
	if n < 1 {
		n = 1
	}
	if !ReusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = reusePortControl
	}
	conns := make([]*net.UDPConn, 0, n)
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		c := pc.(*net.UDPConn)
		conns = append(conns, c)
		if i == 0 {
			// Later sockets bind to the port the first one got.
			addr = c.LocalAddr().String()
		}
	}
	return conns, nil
}

// ListenTCP binds n TCP listening sockets to addr, spread with SO_REUSEPORT
// as ListenUDP does.
func ListenTCP(ctx context.Context, network, addr string, n int) ([]*net.TCPListener, error) {
	if n < 1 || !ReusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = reusePortControl
	}
	ls := make([]*net.TCPListener, 0, n)
	for i := 0; i < n; i++ {
		l, err := lc.Listen(ctx, network, addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		tl := l.(*net.TCPListener)
		ls = append(ls, tl)
		if i == 0 {
			addr = tl.Addr().String()
		}
	}
	return ls, nil
}

// DialUDP opens a connected UDP socket to addr.
func DialUDP(ctx context.Context, network, addr string) (*net.UDPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// AddrPort returns the address of a net.Addr as a netip.AddrPort, with
// IPv4-mapped IPv6 addresses unmapped. It returns the zero value for
// addresses that are not IP addresses.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func closeAll(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// IsClosed reports whether err says the socket was closed locally.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

func errf(format string, args ...any) error {
	return fmt.Errorf("transport: "+format, args...)
}

// SetStreamOptions sets TCP_NODELAY (unless delay) and the keepalive probe
// period (zero: the system's default; negative: off) on c.
func SetStreamOptions(c *net.TCPConn, delay bool, keepAlive time.Duration) error {
	if err := c.SetNoDelay(!delay); err != nil {
		return err
	}
	if keepAlive < 0 {
		return c.SetKeepAlive(false)
	}
	return c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive})
}

// Reset closes c so that the peer gets a reset (RST) rather than an orderly
// end of stream, dropping unsent data.
func Reset(c *net.TCPConn) error {
	c.SetLinger(0)
	return c.Close()
}
