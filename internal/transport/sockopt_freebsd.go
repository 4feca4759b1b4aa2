package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePortSupported reports whether the kernel spreads the traffic of one
// address over several sockets bound to it, so that each shard gets its
// own socket. True on FreeBSD, with SO_REUSEPORT_LB (plain SO_REUSEPORT
// only lets sockets share an address there; one of them gets everything).
const ReusePortSupported = true

func reusePortControl(network, address string, c syscall.RawConn) error {
	return setReusePort(c, address, unix.SO_REUSEPORT_LB, "SO_REUSEPORT_LB")
}
