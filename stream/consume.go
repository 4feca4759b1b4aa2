package stream

import (
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"
)

func init() {
	streamhook.WaitOutput = waitOutput
	streamhook.SetFramed = setFramed
	streamhook.SetBusy = setBusy
}

// consume hands a new server connection to the listener's Consume
// function. It returns false if the function turned it down.
func (c *conn) consume(newConsumer func(h core.Handle, stop <-chan struct{}) streamhook.Consumer) bool {
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

// waitOutput is streamhook.WaitOutput.
func waitOutput(h core.Handle) bool {
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

// setFramed is streamhook.SetFramed.
func setFramed(h core.Handle) {
	if c, ok := h.Socket().(*conn); ok {
		c.framed.Store(true)
	}
}

// setBusy is streamhook.SetBusy.
func setBusy(h core.Handle, delta int) {
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
