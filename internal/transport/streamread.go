package transport

import "net"

// StreamReader reads a TCP socket without holding a buffer while it waits:
// it takes a buffer from Get only when the socket may have data, and gives
// it back with Put when a read finds none. Idle connections then cost no
// read buffer. A StreamReader is not safe for concurrent use.
type StreamReader struct {
	conn *net.TCPConn
	get  func() *[]byte
	put  func(*[]byte)
	raw  rawReader
}

// NewStreamReader returns a reader of c that gets buffers from get and
// returns unused ones to put.
func NewStreamReader(c *net.TCPConn, get func() *[]byte, put func(*[]byte)) (*StreamReader, error) {
	r := &StreamReader{conn: c, get: get, put: put}
	if err := r.raw.init(r); err != nil {
		return nil, err
	}
	return r, nil
}

// Read waits for data and returns the buffer from Get that holds it, which
// the caller now owns, and the number of bytes read. At the end of the
// stream it returns io.EOF; it returns the socket's error on a deadline or a
// close.
func (r *StreamReader) Read() (*[]byte, int, error) { return r.raw.read(r) }
