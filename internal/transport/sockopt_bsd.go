//go:build darwin || openbsd || netbsd || dragonfly

package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePortSupported reports whether the kernel spreads the traffic of one
// address over several sockets bound to it. False on macOS, OpenBSD,
// NetBSD and DragonFly as this package uses them: SO_REUSEPORT lets
// sockets share an address, but is not relied on to balance (on macOS and
// OpenBSD one socket gets the unicast traffic), so the shards share one
// socket. SharePort still sets SO_REUSEPORT, for hand-over on restart.
const ReusePortSupported = false

func reusePortControl(network, address string, c syscall.RawConn) error {
	return setReusePort(c, address, unix.SO_REUSEPORT, "SO_REUSEPORT")
}
