package stream

import (
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
)

// A Consumer takes a server connection's bytes on the connection's own
// goroutine, in place of data events: protocols framed on streams (package
// dnsmsg) use it to turn bytes into messages without a goroutine and a
// channel hand-off more per connection. See Config.Consume.
type Consumer interface {
	// Data is called with each chunk read; b is valid until Data returns.
	// Data may block (the connection reads nothing meanwhile, so TCP pushes
	// back on the peer) but must return soon after stop is closed. A
	// non-nil error ends reading and becomes the final error; the
	// connection stays open for sends in progress until its handle's last
	// reference goes, as after nm.ErrEOF.
	Data(b []byte) error
	// Final is called once, after the last Data, with the final error
	// (the table in the package documentation; nm.ErrCanceled for a local
	// shutdown).
	Final(err error)
}

// consume hands a new server connection to the listener's Consume
// function. It returns false if the function turned it down.
func (c *conn) consume(newConsumer func(h core.Handle, stop <-chan struct{}) Consumer) bool {
	cons := newConsumer(c.h, c.stop)
	if cons == nil {
		return false
	}
	c.mu.Lock()
	c.consumer = cons
	c.started, c.reading = true, true
	c.mu.Unlock()
	return true
}

// consumeData gives a chunk to the consumer and recycles its buffer. An
// error from the consumer ends reading; the connection stays open for the
// replies in progress until its handle is released, as after ErrEOF.
func (c *conn) consumeData(b *[]byte, n int) error {
	if n == len(*b) && c.class < len(bufClasses)-1 {
		c.class++
	}
	c.mu.Lock()
	c.gotData = true
	c.mu.Unlock()
	err := c.consumer.Data((*b)[:n])
	putBuf(b)
	return err
}

// WaitOutput is for a Consumer's Data, on the connection's reader
// goroutine: it waits while more than Config.Backpressure bytes of the
// connection's output are unsent, so that a peer that does not read stops
// being served between two messages of one read, not only between reads.
// It returns false if the connection shuts down first. Other handles do
// not wait.
func WaitOutput(h core.Handle) bool {
	c, ok := h.Socket().(*conn)
	if !ok {
		return true
	}
	for {
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		switch {
		case closing:
			return false
		case !c.overBound():
			return true
		}
		<-c.wake
	}
}

// SetFramed tells a connection that the protocol over it counts the
// messages it frames (package dnsmsg counts DNS messages as Received):
// its data events are then no longer counted as Received. Reads still
// counts each read. Other handles ignore it.
func SetFramed(h core.Handle) {
	if c, ok := h.Socket().(*conn); ok {
		c.framed.Store(true)
	}
}

// SetBusy counts the requests of a server connection being answered (delta
// +1 when one is taken, -1 when it is done): while any is, the initial and
// idle timers do not run; the idle timer starts again when the last one is
// done. Other handles ignore it.
func SetBusy(h core.Handle, delta int) {
	c, ok := h.Socket().(*conn)
	if !ok || !c.server {
		return
	}
	c.mu.Lock()
	was := c.busy > 0
	c.busy += delta
	// While busy, a deadline armed before is left to wake the reader, which
	// then sees that no timeout is due (see armRead). Once idle again, the
	// idle timer starts now, and the read in progress gets its deadline
	// unless an earlier one will wake it.
	if was && c.busy == 0 {
		now := time.Now()
		c.idleFrom = now
		if c.reading && !c.closing {
			c.armRead(c.readDeadline(), now)
		}
	}
	c.mu.Unlock()
}
