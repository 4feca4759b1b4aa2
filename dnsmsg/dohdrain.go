package dnsmsg

import (
	"context"
	"errors"

	"github.com/rainbowduck/netmgr/internal/core"
	"golang.org/x/net/http2"
)

// Graceful drain of a DoH listener, as http.Server.Shutdown: no new
// request is taken (HTTP/2 connections send GOAWAY with the last stream
// they accepted and refuse later ones with REFUSED_STREAM; HTTP/1.1
// connections close after their current response), requests already
// delivered send their replies, and each connection closes once it has
// none open.

// Shutdown drains the listener: it stops taking new requests, lets the
// requests already delivered be answered until ctx ends, then closes the
// listener (see Close). It returns nil once every connection ended, or
// ctx's error if ctx ended first. The endpoints' channels get their final
// event at the close, as with Close.
func (l *HTTPListener) Shutdown(ctx context.Context) (err error) {
	s := l.s
	s.sl.StopAccepting() // new connections are refused by the kernel
	if open, first := s.drain(); first {
		ended := logDrain(s.m, core.HTTP, s.sl.Addr(), open)
		defer func() { ended(err) }()
	}
	err = s.waitConns(ctx)
	if s.cfg.HTTP1 {
		if e := s.base.Shutdown(ctx); err == nil && !errors.Is(e, context.Canceled) {
			err = e
		}
	}
	l.Close()
	return err
}

// drain starts the drain of every connection, and of those that come. It
// returns the HTTP/2 connections open, and whether this is the first
// drain.
func (s *httpServer) drain() (open int, first bool) {
	first = !s.draining.Swap(true)
	s.base.SetKeepAlivesEnabled(false) // HTTP/1.1: close after the current response
	s.mu.Lock()
	defer s.mu.Unlock()
	open = len(s.conns)
	for c := range s.conns {
		c.mu.Lock()
		c.pokeLocked() // the reader sends GOAWAY
		c.mu.Unlock()
	}
	return open, first
}

// track adds an HTTP/2 connection to those drain reaches; false if the
// listener is closed.
func (s *httpServer) track(c *h2conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*h2conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *httpServer) untrackConn(c *h2conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.gone != nil {
		close(s.gone)
		s.gone = nil
	}
	s.mu.Unlock()
}

// waitConns waits until no HTTP/2 connection is left, or ctx ends.
func (s *httpServer) waitConns(ctx context.Context) error {
	s.mu.Lock()
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.gone == nil {
		s.gone = make(chan struct{})
	}
	gone := s.gone
	s.mu.Unlock()
	select {
	case <-gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainStep runs on the reader when it wakes: once the listener drains,
// it queues GOAWAY with the last stream accepted (once); true when the
// connection has no stream open any more and should close.
func (c *h2conn) drainStep() bool {
	if !c.s.draining.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.drained {
		c.drained = true
		c.wfr.WriteGoAway(c.lastID, http2.ErrCodeNo, nil)
		c.wakeLocked()
	}
	return len(c.streams) == 0 && c.readyN == 0
}
