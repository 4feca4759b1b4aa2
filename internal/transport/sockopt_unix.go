//go:build linux || freebsd || darwin || openbsd || netbsd || dragonfly

package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setReusePort sets the socket option opt (SO_REUSEPORT or FreeBSD's
// SO_REUSEPORT_LB), named name in errors, on c.
func setReusePort(c syscall.RawConn, address string, opt int, name string) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return errf("%s on %s: %w", name, address, serr)
	}
	return nil
}
