package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePortSupported reports whether the kernel spreads the traffic of one
// address over several sockets bound to it, so that each shard gets its
// own socket. True on Linux (SO_REUSEPORT: datagrams and connections are
// spread by a hash of the peer's address and port) and FreeBSD
// (SO_REUSEPORT_LB); false elsewhere, where the shards share one socket.
const ReusePortSupported = true

func reusePortControl(network, address string, c syscall.RawConn) error {
	return setReusePort(c, address, unix.SO_REUSEPORT, "SO_REUSEPORT")
}
