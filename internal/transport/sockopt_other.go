//go:build !(linux || freebsd || darwin || openbsd || netbsd || dragonfly)

package transport

import (
	"runtime"
	"syscall"
)

// ReusePortSupported reports whether the kernel spreads the traffic of one
// address over several sockets bound to it. False on this platform: the
// shards share one socket, and SharePort is refused (Windows' SO_REUSEADDR
// would let any process take the port over).
const ReusePortSupported = false

func reusePortControl(network, address string, c syscall.RawConn) error {
	return errf("sharing %s: port sharing is not supported on %s", address, runtime.GOOS)
}
