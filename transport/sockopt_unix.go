//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePortSupported reports whether this platform lets several sockets bind
// one address with SO_REUSEPORT and balances flows between them.
const ReusePortSupported = true

func reusePortControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return errf("SO_REUSEPORT on %s: %w", address, serr)
	}
	return nil
}
