package dnsmsg

import (
	"context"
	"net"
	"sync"

	"github.com/rainbowduck/netmgr/internal/core"
)

// HTTP/1.1 for DoH listeners with HTTPConfig.HTTP1: net/http serves the
// connections that did not choose HTTP/2, fed through a channel listener,
// while the stream listener's goroutine for each waits until net/http
// closes it.

// serveHTTP1 runs net/http over the connections handed off; it returns
// when the listener closes.
func (s *httpServer) serveHTTP1() {
	s.base.BaseContext = func(net.Listener) context.Context { return s.m.Context() }
	s.base.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c.(*h1Conn).hc)
	}
	s.base.Serve(chanListener{s})
}

// handOff gives a connection to net/http and waits until it is closed.
func (s *httpServer) handOff(c *h1Conn) {
	select {
	case s.h1conns <- c:
	case <-s.stop:
		return
	}
	<-c.closed
}

// chanListener is the net.Listener net/http accepts from.
type chanListener struct{ s *httpServer }

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.h1conns:
		return c, nil
	case <-l.s.stop:
		return nil, net.ErrClosed
	case <-l.s.h1closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail: net/http's Shutdown closes its listener and
// waits for Serve to return.
func (l chanListener) Close() error {
	l.s.h1once.Do(func() { close(l.s.h1closed) })
	return nil
}

func (l chanListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.s.sl.Addr()) }

// h1Conn is a connection served with HTTP/1.1: first holds the bytes read
// while looking for the HTTP/2 preface, read again before the socket. Its
// reads and writes are counted (Reads, Writes) as HTTP/2's are.
type h1Conn struct {
	net.Conn
	hc     *httpConn
	stats  *core.Counters
	first  []byte
	once   sync.Once
	closed chan struct{} // closed by Close
}

func (c *h1Conn) Read(b []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(b, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.stats.Reads.Add(1)
	}
	return n, err
}

func (c *h1Conn) Write(b []byte) (int, error) {
	c.stats.Writes.Add(1)
	return c.Conn.Write(b)
}

func (c *h1Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}
