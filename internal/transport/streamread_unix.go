//go:build unix

package transport

import (
	"io"
	"net"
	"syscall"
)

type rawReader struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool // r.readFD, bound once so Read allocates nothing
	buf *[]byte
	n   int
	err error
}

func (rr *rawReader) init(r *StreamReader) error {
	rc, err := r.conn.SyscallConn()
	if err != nil {
		return err
	}
	rr.rc = rc
	rr.fn = func(fd uintptr) bool { return rr.readFD(r, fd) }
	return nil
}

func (rr *rawReader) readFD(r *StreamReader, fd uintptr) bool {
	if rr.buf == nil {
		rr.buf = r.get()
	}
	n, e, ready := readNow(fd, *rr.buf)
	switch {
	case !ready:
		// Nothing to read: give the buffer back while waiting.
		r.put(rr.buf)
		rr.buf = nil
		return false
	case e != 0:
		rr.n, rr.err = 0, e
	default:
		rr.n, rr.err = n, nil
	}
	return true
}

func (rr *rawReader) read(r *StreamReader) (*[]byte, int, error) {
	err := rr.rc.Read(rr.fn)
	b := rr.buf
	rr.buf = nil
	if err == nil {
		err = rr.err
		if err != nil {
			err = &net.OpError{Op: "read", Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: err}
		} else if rr.n == 0 {
			err = io.EOF
		}
	}
	if err != nil {
		if b != nil {
			r.put(b)
		}
		return nil, 0, err
	}
	return b, rr.n, nil
}
