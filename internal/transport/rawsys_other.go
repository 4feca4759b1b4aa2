//go:build !unix

package transport

import (
	"net"
)

// RawIO reads and writes a TCP socket; where raw system calls are not
// made, with the socket's own Read and Write.
type RawIO struct{ conn *net.TCPConn }

// Init makes r the reader and writer of c.
func (r *RawIO) Init(c *net.TCPConn) error {
	r.conn = c
	return nil
}

// Read reads into b, as net.TCPConn.Read does.
func (r *RawIO) Read(b []byte) (int, error) { return r.conn.Read(b) }

// Write writes all of b, as net.TCPConn.Write does.
func (r *RawIO) Write(b []byte) (int, error) { return r.conn.Write(b) }

// AwaitReadable returns nil at once where the socket cannot be waited for
// without reading it.
func AwaitReadable(c *net.TCPConn) error { return nil }
