//go:build !unix

package stream

import "net"

// sysWriter writes a connection's buffers where there is no RawConn
// writev: an attempt that must not wait writes nothing, so the writer
// goroutine does every write.
type sysWriter struct{ vec net.Buffers }

func (s *sysWriter) init(w *writeState) {}

func (s *sysWriter) write(c *conn, w *writeState, wait bool) (int, error) {
	if !wait {
		return 0, nil
	}
	s.vec = append(s.vec[:0], w.bufs...)
	n, err := s.vec.WriteTo(c.tcp)
	clear(s.vec[:cap(s.vec)])
	return int(n), err
}
