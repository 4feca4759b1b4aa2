package stream

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// Read implements socket: it starts (or resumes) reading.
func (c *conn) Read(h core.Handle) <-chan nm.Event {
	c.mu.Lock()
	if !c.closing && !c.reading {
		c.started, c.reading = true, true
		c.deadline = time.Time{}
		if !c.server && c.t.Read > 0 {
			c.deadline = time.Now().Add(c.t.Read)
		}
		c.signal()
	}
	c.mu.Unlock()
	if c.ch == nil {
		return noEvents // a consumer takes this connection's data
	}
	return c.ch
}

// noEvents is the event channel of connections whose data goes to a
// Consumer: closed, with no event.
var noEvents = func() chan nm.Event {
	ch := make(chan nm.Event)
	close(ch)
	return ch
}()

// ReadStop implements socket: no data event is delivered after it
// returns until Read is called again.
func (c *conn) ReadStop(h core.Handle) {
	c.mu.Lock()
	if c.reading {
		c.reading = false
		c.poke()
	}
	c.mu.Unlock()
}

// run is the reader goroutine of a connection.
func (c *conn) run() {
	defer c.end()
	if c.l != nil && !c.l.deliver(c) {
		return
	}
	final, keepOpen := c.readLoop()
	c.finish(final)
	if keepOpen {
		// The peer closed its side; ours stays open for replies until the
		// handle is closed.
		c.mu.Lock()
		for !c.closing {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		c.mu.Unlock()
	}
}

// readLoop reads while asked to and returns the final error (nil: a local
// shutdown) and whether the socket stays open for writing.
func (c *conn) readLoop() (final error, keepOpen bool) {
	// fresh: the idle timer starts again at this read, which follows data
	// or a pause in reading (not an early wake of a lazily armed deadline).
	fresh := true
	for {
		c.mu.Lock()
		for !c.closing && (!c.reading || c.server && c.overBound()) {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
			fresh = true
		}
		if c.closing {
			c.mu.Unlock()
			return nil, false
		}
		now := time.Now()
		if fresh {
			c.idleFrom = now
		}
		deadline := c.readDeadline()
		c.armRead(deadline, now) // under mu, so that a later poke wins
		c.mu.Unlock()

		b, n, err := c.readOnce()
		fresh = err == nil
		if err == nil {
			if c.consumer != nil {
				if err := c.consumeData(b, n); err != nil {
					// Reading is over; replies still go out.
					return err, true
				}
				continue
			}
			if !c.deliverData(b, n) {
				return nil, false
			}
			continue
		}
		if final, keepOpen, done := c.readFailed(err, deadline); done {
			return final, keepOpen
		}
	}
}

// readDeadline returns when the next read times out. Called with mu held.
func (c *conn) readDeadline() time.Time {
	if !c.server {
		return c.deadline
	}
	if c.busy > 0 {
		return time.Time{}
	}
	d := c.t.Idle
	switch {
	case !c.gotData:
		if c.t.Initial <= 0 {
			return time.Time{}
		}
		return c.born.Add(c.t.Initial)
	case c.keepalive:
		d = c.t.Keepalive
	}
	if d <= 0 {
		return time.Time{}
	}
	return c.idleFrom.Add(d)
}

func (c *conn) overBound() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.unsent > c.backpressure && c.broken == nil
}

func (c *conn) readOnce() (*[]byte, int, error) {
	if c.sr != nil {
		b, n, err := c.sr.Read()
		if err == nil {
			c.stats.Reads.Add(1)
		}
		return b, n, err
	}
	b := c.getBuf()
	n, err := c.nc.Read(*b)
	if n > 0 {
		c.stats.Reads.Add(1)
		return b, n, nil
	}
	putBuf(b)
	if err == nil {
		err = io.ErrNoProgress
	}
	return nil, 0, err
}

// getBuf returns a read buffer of the current class.
func (c *conn) getBuf() *[]byte { return getBuf(c.class) }

// deliverData hands a data event to the consumer and returns false if the
// connection was shut down meanwhile.
func (c *conn) deliverData(b *[]byte, n int) bool {
	if !c.framed.Load() {
		c.stats.Received.Add(1)
	}
	// A full buffer means more may be waiting: read more at once next time.
	if n == len(*b) && c.class < len(bufClasses)-1 {
		c.class++
	}
	ev := nm.Event{Handle: nm.Handle(c.h), Data: (*b)[:n]}
	c.mu.Lock()
	c.gotData = true
	if !c.server && c.t.Read > 0 {
		c.deadline = time.Now().Add(c.t.Read)
	}
	c.mu.Unlock()
	if !c.deliver(ev, true) {
		return false
	}
	// The consumer has now received the event before this one, so it is
	// done with the data of the event before that.
	if old := c.inUse[0]; old != nil {
		putBuf(old)
	}
	c.inUse[0], c.inUse[1] = c.inUse[1], b
	return true
}

// deliver sends ev, waiting for the consumer; a data event waits too while
// reading is stopped. It returns false if the connection was shut down
// first.
func (c *conn) deliver(ev nm.Event, data bool) bool {
	for {
		c.mu.Lock()
		for data && !c.reading && !c.closing {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return false
		}
		if core.Deliver(c.shard, c.ch, ev, c.wake) {
			return true
		}
	}
}

// readFailed decides what a failed read means. done reports that reading
// is over, with the final error (nil: a local shutdown).
func (c *conn) readFailed(err error, deadline time.Time) (final error, keepOpen, done bool) {
	c.mu.Lock()
	switch {
	case c.closing || c.m.Closing():
		// A local shutdown; when the whole manager closes, the peer's
		// reset (ours, from the other end) is part of it too.
		c.mu.Unlock()
		return nil, false, true
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !c.reading || deadline.IsZero() || time.Now().Before(deadline) {
			c.mu.Unlock()
			return nil, false, false // a poke, not a timeout
		}
		if c.server {
			c.mu.Unlock()
			return nm.ErrTimedOut, false, true
		}
		// On clients a timeout ends only this read.
		c.reading = false
		c.mu.Unlock()
		return nil, false, !c.deliver(nm.Event{Handle: nm.Handle(c.h), Err: nm.ErrTimedOut}, false)
	case errors.Is(err, io.EOF):
		c.mu.Unlock()
		return nm.ErrEOF, true, true
	}
	c.mu.Unlock()
	c.stats.RecvFailed.Add(1)
	return core.MapError(err), false, true
}

// finish delivers the final event, if the handle was ever read, and closes
// the channel. final is nil for a local shutdown.
func (c *conn) finish(final error) {
	c.mu.Lock()
	started, reading, reason := c.started, c.reading, c.reason
	if final != nil {
		c.reading = false
	}
	c.mu.Unlock()
	if c.consumer != nil {
		if final == nil {
			final = nm.ErrCanceled
			if reason != nil {
				final = reason
			}
		}
		c.consumer.Final(final)
		return
	}
	if !started {
		close(c.ch)
		return
	}
	if final != nil {
		// The peer ended it: the consumer gets every event before the
		// final one, unless the connection is shut down meanwhile.
		if c.deliver(nm.Event{Handle: nm.Handle(c.h), Err: final}, false) {
			close(c.ch)
			return
		}
	} else {
		switch {
		case reason != nil:
			final = reason
		case reading:
			final = nm.ErrCanceled
		default:
			final = nm.ErrShuttingDown
		}
	}
	core.Finalize(c.ch, nm.Event{Handle: nm.Handle(c.h), Err: final}, nil)
}
