//go:build !linux

package dnsmsg

import "net"

// attachSteering steers by connection ID on Linux only.
func attachSteering(socks []*net.UDPConn) bool { return false }
