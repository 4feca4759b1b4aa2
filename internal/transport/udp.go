package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

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
