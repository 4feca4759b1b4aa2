//go:build unix

package stream

import (
	"os"
	"syscall"

	"github.com/rainbowduck/netmgr/internal/transport"
	"golang.org/x/sys/unix"
)

// sysWriter writes a connection's buffers with writev through the socket's
// RawConn: the poller waits for room only when asked to.
type sysWriter struct {
	fn   func(fd uintptr) bool // writeFD bound to its writeState once
	iov  []unix.Iovec
	wait bool
	n    int
	err  error
}

func (s *sysWriter) init(w *writeState) {
	s.fn = func(fd uintptr) bool { return s.writeFD(fd) }
}

// write makes one writev of the writeState's buffers on c's socket.
func (s *sysWriter) write(c *conn, w *writeState, wait bool) (int, error) {
	if c.rc == nil {
		rc, err := c.tcp.SyscallConn()
		if err != nil {
			return 0, err
		}
		c.rc = rc
	}
	s.iov = s.iov[:0]
	for _, b := range w.bufs {
		if len(b) > 0 {
			var v unix.Iovec
			v.Base = &b[0]
			v.SetLen(len(b))
			s.iov = append(s.iov, v)
		}
	}
	s.wait, s.n, s.err = wait, 0, nil
	if len(s.iov) == 0 {
		return 0, nil
	}
	err := c.rc.Write(s.fn)
	clear(s.iov)
	if err == nil {
		err = s.err
	}
	return s.n, err
}

func (s *sysWriter) writeFD(fd uintptr) bool {
	n, e, ready := transport.WritevNow(fd, s.iov)
	switch {
	case !ready:
		return !s.wait
	case e != 0:
		s.err = os.NewSyscallError("writev", syscall.Errno(e))
	default:
		s.n = n
	}
	return true
}
