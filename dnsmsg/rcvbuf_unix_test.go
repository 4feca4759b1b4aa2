//go:build unix

package dnsmsg_test

import "syscall"

// smallRcvBuf is a net.Dialer Control that gives the socket a 4 KiB
// receive buffer: a peer that reads slowly, or not at all, fills it soon.
func smallRcvBuf(_, _ string, rc syscall.RawConn) error {
	var err error
	rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return err
}
