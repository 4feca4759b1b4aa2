package dnsmsg

import (
	"net"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// attachSteering attaches the connection-ID steering program to the
// SO_REUSEPORT group of socks (bound in order: socket i is the group's
// i-th); it reports whether it could.
func attachSteering(socks []*net.UDPConn) bool {
	if len(socks) < 2 || len(socks) > 256 {
		return false
	}
	raw, err := bpf.Assemble(doqSteerProgram(len(socks)))
	if err != nil {
		return false
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	rc, err := socks[0].SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog)
	}); err != nil {
		return false
	}
	return serr == nil
}
