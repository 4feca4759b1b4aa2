package dnsmsg

import (
	"crypto/tls"
	"encoding/binary"
)

// recordConn is the TLS connection an HTTP/2 server writes to: it ends a
// TLS record after every frame that ends a stream, so that each reply
// comes in records of its own. HTTP/2 would allow replies to share a
// record; some DoH clients (dnsperf among them) read one record at a time
// and keep only the last reply found in it.
type recordConn struct {
	*tls.Conn
	hdr  [frameHeaderLen]byte // a frame header split across writes
	nhdr int                  // bytes of it held in hdr
	left int                  // payload bytes of the current frame still to come
	ends bool                 // the current frame ends a stream
}

const (
	frameHeaderLen = 9
	frameData      = 0x0
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	flagEndStream  = 0x1
)

// Write writes b, cutting it into separate TLS writes (and so records)
// after each frame that ends a stream.
func (c *recordConn) Write(b []byte) (int, error) {
	written := 0
	for start := 0; start < len(b); {
		cut := c.scan(b[start:])
		n, err := c.Conn.Write(b[start : start+cut])
		written += n
		if err != nil {
			return written, err
		}
		start += cut
	}
	return written, nil
}

// scan follows the frames in b and returns how many bytes go in the next
// write: up to the end of the first frame that ends a stream, or all of b.
func (c *recordConn) scan(b []byte) int {
	i := 0
	for i < len(b) {
		if c.left == 0 && c.nhdr < frameHeaderLen {
			n := copy(c.hdr[c.nhdr:], b[i:])
			c.nhdr += n
			i += n
			if c.nhdr < frameHeaderLen {
				return i
			}
			c.left = int(binary.BigEndian.Uint32(c.hdr[:4]) >> 8)
			typ, flags := c.hdr[3], c.hdr[4]
			c.ends = (typ == frameData || typ == frameHeaders) && flags&flagEndStream != 0 || typ == frameRSTStream
		}
		n := min(c.left, len(b)-i)
		c.left -= n
		i += n
		if c.left == 0 {
			c.nhdr = 0
			if c.ends {
				c.ends = false
				return i
			}
		}
	}
	return i
}
