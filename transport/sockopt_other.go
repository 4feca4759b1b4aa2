//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package transport

import "syscall"

// ReusePortSupported reports whether this platform lets several sockets bind
// one address with SO_REUSEPORT and balances flows between them.
const ReusePortSupported = false

func reusePortControl(network, address string, c syscall.RawConn) error { return nil }
