package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	return bindN(n, addr, func(lc *net.ListenConfig, addr string) (*net.UDPConn, string, error) {
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil {
			return nil, "", err
		}
		return pc.(*net.UDPConn), pc.LocalAddr().String(), nil
	})
}

// ListenTCP binds n TCP listening sockets to addr, spread with SO_REUSEPORT
// as ListenUDP does.
func ListenTCP(ctx context.Context, network, addr string, n int) ([]*net.TCPListener, error) {
	return bindN(n, addr, func(lc *net.ListenConfig, addr string) (*net.TCPListener, string, error) {
		l, err := lc.Listen(ctx, network, addr)
		if err != nil {
			return nil, "", err
		}
		return l.(*net.TCPListener), l.Addr().String(), nil
	})
}

// bindN binds n sockets to addr with bind, SO_REUSEPORT set when n > 1;
// after the first, addr is the address it got, so port 0 is shared.
func bindN[S io.Closer](n int, addr string, bind func(lc *net.ListenConfig, addr string) (S, string, error)) ([]S, error) {
	if n < 1 || !ReusePortSupported {
		n = 1
	}
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = reusePortControl
	}
	socks := make([]S, 0, n)
	for i := 0; i < n; i++ {
		s, bound, err := bind(&lc, addr)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, err
		}
		socks = append(socks, s)
		addr = bound
	}
	return socks, nil
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
