package stream

import (
	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
)

// A connection's output. Send and SendAsync never wait for the peer: they
// put the message in the connection's bounded output and return. The
// goroutine that finds nobody writing makes one non-blocking attempt at
// once (so at low load a reply leaves from the caller's goroutine, with no
// hand-off); what the socket does not take waits for the connection's
// writer goroutine, which writes everything queued together (one writev on
// TCP, as few TLS records as possible) and waits for the peer with the
// write timeout.
//
// Who writes: the goroutine holding c.writing (under wmu). It is set by a
// Send that finds the output empty (its attempt), or by the first send
// queued behind nobody (which starts the writer goroutine); whoever holds
// it and leaves output behind hands it to a new writer goroutine. So
// there is output (queue or raw) only while writing is set.

// maxPrefix is the longest prefix SendPrefixed takes.
const maxPrefix = 8

// sendReq is a message waiting in a connection's output.
type sendReq struct {
	b    []byte
	own  *[]byte // the pooled copy b lies in (Send), or nil (SendAsync: the caller's)
	done chan<- error
	pfx  [maxPrefix]byte // sent before b: pfx[:npfx]
	npfx uint8
}

func (r *sendReq) size() int { return int(r.npfx) + len(r.b) }

// Send implements socket: it copies b into the connection's output and
// returns; it never waits for the peer.
func (c *conn) Send(h core.Handle, b []byte) error { return c.send(h, nil, b, nil) }

// SendAsync implements socket: it queues b, not copied, for the writer
// goroutine, which reports on done. The send holds a reference to h until
// it completes.
func (c *conn) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	return c.send(h, nil, b, done)
}

// SendPrefixed is Send of prefix and b as one message: nothing else goes
// between them, TCP writes both with one writev and TLS puts them in one
// record. prefix, at most 8 bytes (a length, say), is copied, and so is b.
// It never waits for the peer. Handles that are not stream connections get
// ErrNotSupported.
func SendPrefixed(nh nm.Handle, prefix, b []byte) error {
	h := core.Handle(nh)
	c, ok := h.Socket().(*conn)
	if !ok || len(prefix) > maxPrefix {
		return nm.ErrNotSupported
	}
	return c.send(h, prefix, b, nil)
}

// SendPrefixedBatched is SendPrefixed for a message that more messages
// are about to follow (a server whose requests are waiting for their
// consumer): it is copied into the output and left for the connection's
// writer goroutine, which writes what has gathered meanwhile in one
// writev (TLS: one record per 16 KiB), instead of a system call of its
// own. It never waits for the peer.
func SendPrefixedBatched(nh nm.Handle, prefix, b []byte) error {
	h := core.Handle(nh)
	c, ok := h.Socket().(*conn)
	if !ok || len(prefix) > maxPrefix {
		return nm.ErrNotSupported
	}
	return c.sendLater(h, prefix, b, nil, true)
}

// SendPrefixedAsync is SendAsync of prefix and b as one message, as
// SendPrefixed; b is not copied and must not change until done receives.
func SendPrefixedAsync(nh nm.Handle, prefix, b []byte, done chan<- error) error {
	h := core.Handle(nh)
	c, ok := h.Socket().(*conn)
	if !ok || len(prefix) > maxPrefix {
		return nm.ErrNotSupported
	}
	return c.send(h, prefix, b, done)
}

// send puts a message in the output. With done nil (Send) the message is
// copied, or written at once when nobody is writing; with done it is
// queued as it is and done gets the outcome from the writer goroutine,
// never from the caller's stack.
func (c *conn) send(h core.Handle, prefix, b []byte, done chan<- error) error {
	return c.sendLater(h, prefix, b, done, false)
}

// sendLater is send; with later, a copied message waits for the writer
// goroutine even when nobody writes, so that it leaves with the messages
// sent after it.
func (c *conn) sendLater(h core.Handle, prefix, b []byte, done chan<- error, later bool) error {
	size := len(prefix) + len(b)
	c.wmu.Lock()
	if err := c.roomFor(size); err != nil {
		c.wmu.Unlock()
		c.stats.SendFailed.Add(1)
		if err == nm.ErrOutputFull {
			c.outputFull()
		}
		return err
	}
	c.unsent += size
	if done == nil && !c.writing && !later {
		c.writing = true
		c.wmu.Unlock()
		return c.sendNow(h, prefix, b)
	}
	c.queue = append(c.queue, newReq(prefix, b, done))
	h.Attach()
	start := !c.writing
	c.writing = true
	c.wmu.Unlock()
	if start {
		c.startWriter()
	}
	return nil
}

// roomFor refuses a send of size bytes on a closed connection or one whose
// output it would take past the bound; a send to an empty output is
// always taken. Called with wmu held.
func (c *conn) roomFor(size int) error {
	switch {
	case c.broken != nil || c.closed:
		return nm.ErrClosed
	case c.unsent > 0 && c.unsent+size > c.maxOutput:
		return nm.ErrOutputFull
	}
	return nil
}

// newReq returns the request of a send: a pooled copy of prefix and b
// when done is nil, else b itself.
func newReq(prefix, b []byte, done chan<- error) sendReq {
	if done != nil {
		r := sendReq{b: b, done: done, npfx: uint8(len(prefix))}
		copy(r.pfx[:], prefix)
		return r
	}
	own := getOut(len(prefix) + len(b))
	*own = append(append((*own)[:0], prefix...), b...)
	return sendReq{b: *own, own: own}
}

// outputFull ends a connection whose output filled: the peer does not take
// what it is sent.
func (c *conn) outputFull() {
	c.stats.OutputFull.Add(1)
	c.m.Logger().Warn("stream: output full, connection reset", "tls", c.tls != nil, "peer", c.h.PeerAddr(), "reason", "peer not reading", "max", c.maxOutput)
	c.abort(nm.ErrOutputFull)
}

// abort ends the connection at once with reason as its final event: the
// socket is reset and what is queued fails.
func (c *conn) abort(reason error) {
	c.breakOutput(reason)
	c.shutdown(reason)
	c.closeSocket(true)
}

// breakOutput makes the output fail from now on with err (first error
// wins) and wakes a writer waiting for the peer.
func (c *conn) breakOutput(err error) {
	c.wmu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.wmu.Unlock()
	c.tcp.SetWriteDeadline(aLongTimeAgo)
}

// sendNow is a send made by the goroutine that found nobody writing: one
// attempt that does not wait; what the socket does not take is queued for
// the writer goroutine.
func (c *conn) sendNow(h core.Handle, prefix, b []byte) error {
	w := getWriteState(c)
	pfx := w.pfx[:copy(w.pfx[:], prefix)] // the caller's stays on its stack
	var err error
	if c.tls != nil {
		err = c.encode(w, pfx, b)
		if err == nil {
			err = c.flushRawNow(w)
		}
	} else {
		err = c.writeNow(w, h, pfx, b)
	}
	putWriteState(w)
	if err != nil {
		c.writeFailed(err, 1)
	}
	c.release()
	return err
}

// writeNow makes one non-blocking writev of prefix and b and queues the
// rest, copied, in front of the sends queued meanwhile.
func (c *conn) writeNow(w *writeState, h core.Handle, prefix, b []byte) error {
	w.setIov(prefix, b)
	n, err := c.writeRaw(w, false)
	size := len(prefix) + len(b)
	if err != nil {
		c.unsentDone(size)
		return err
	}
	if n == size {
		c.unsentDone(size)
		c.stats.Sent.Add(1)
		return nil
	}
	var r sendReq
	if n < len(prefix) {
		r = newReq(prefix[n:], b, nil)
	} else {
		r = newReq(nil, b[n-len(prefix):], nil)
	}
	h.Attach()
	c.wmu.Lock()
	c.unsent -= n
	c.queue = append(c.queue, sendReq{})
	copy(c.queue[1:], c.queue)
	c.queue[0] = r
	c.wmu.Unlock()
	return nil
}

// unsentDone takes n bytes off the output's count and lets the reader
// look at its backpressure again.
func (c *conn) unsentDone(n int) {
	c.wmu.Lock()
	c.unsent -= n
	c.wmu.Unlock()
	c.signal()
}

// release gives the writing flag up after an attempt, or hands it to a
// writer goroutine when output is left.
func (c *conn) release() {
	c.wmu.Lock()
	more := len(c.queue) > 0 || c.rawLen() > 0
	half := false
	if !more {
		c.writing = false
		half = c.takeHalfClose()
	}
	c.wmu.Unlock()
	c.signal()
	if more {
		c.startWriter()
	}
	if half {
		c.closeWrite()
	}
}

// takeHalfClose reports, once, that a CloseWrite waits for the output to
// be written. Called with wmu held, as the writing flag is given up.
func (c *conn) takeHalfClose() bool {
	half := c.halfClose
	c.halfClose = false
	return half
}

// writeFailed handles a write that failed: a timeout resets the
// connection (counted), any other failure ends it; either way later sends
// fail at once.
func (c *conn) writeFailed(err error, msgs int) {
	c.stats.SendFailed.Add(int64(msgs))
	c.wmu.Lock()
	broken := c.broken
	c.wmu.Unlock()
	if broken != nil {
		return // already ended; this failure is a consequence
	}
	if err == nm.ErrTimedOut {
		c.stats.WriteTimeouts.Add(1)
		c.m.Logger().Debug("stream: write timed out, connection reset", "peer", c.h.PeerAddr())
		c.abort(nm.ErrTimedOut)
		return
	}
	c.breakOutput(err)
	if c.m.Closing() {
		// As for reads (readFailed): when the whole manager closes, the
		// peer's reset (ours, from the other end) is part of it, and the
		// final event says so.
		err = nil
	}
	c.shutdown(err)
}

func (c *conn) startWriter() {
	if err := c.m.Go(c.writeLoop); err != nil {
		// The manager is closing: fail what is queued.
		c.breakOutput(nm.ErrClosed)
		c.closeSocket(false)
		c.writeLoop()
	}
}

// writeLoop is the writer goroutine: it writes the output, waiting for
// the peer with the write timeout, until it is empty. Only the goroutine
// holding the writing flag runs it.
func (c *conn) writeLoop() {
	w := getWriteState(c)
	defer putWriteState(w)
	for c.writeStep(w) {
	}
	c.signal()
}

// writeStep writes some of the output; it returns false, giving the
// writing flag up, when there is none left or the output is broken.
func (c *conn) writeStep(w *writeState) bool {
	c.wmu.Lock()
	if err := c.broken; err != nil {
		c.failQueued(w, err)
		return false
	}
	if c.rawLen() > 0 {
		c.wmu.Unlock()
		return c.flushRaw(w)
	}
	if len(c.queue) == 0 {
		c.writing = false
		half := c.takeHalfClose()
		c.wmu.Unlock()
		if half {
			c.closeWrite()
		}
		return false
	}
	if c.tls != nil {
		return c.encodeQueue(w) // unlocks
	}
	w.gather(c.queue, c.head)
	c.wmu.Unlock()
	n, err := c.writeRaw(w, true)
	if err != nil {
		c.writeFailed(err, 0)
		return true
	}
	c.advance(w, n)
	return true
}

// advance takes n written bytes off the front of the queue and completes
// the sends wholly written.
func (c *conn) advance(w *writeState, n int) {
	c.wmu.Lock()
	c.unsent -= n
	n += c.head
	k := 0
	for k < len(c.queue) && n >= c.queue[k].size() {
		n -= c.queue[k].size()
		k++
	}
	c.head = n
	w.done = append(w.done[:0], c.queue[:k]...)
	c.shift(k)
	c.wmu.Unlock()
	c.signal()
	c.completeAll(w, nil)
}

// shift drops the first k requests of the queue. Called with wmu held.
func (c *conn) shift(k int) {
	m := copy(c.queue, c.queue[k:])
	clear(c.queue[m:])
	c.queue = c.queue[:m]
	if m == 0 && cap(c.queue) > 64 {
		c.queue = nil // a burst is over: let its array go
	}
}

// failQueued completes everything queued with err (nm.ErrCanceled when the
// connection was closed), drops the output and gives the writing flag up.
// Called with wmu held; it unlocks.
func (c *conn) failQueued(w *writeState, err error) {
	if err == nm.ErrClosed {
		err = nm.ErrCanceled
	}
	w.done = append(w.done[:0], c.queue...)
	c.shift(len(c.queue))
	c.head, c.unsent = 0, 0
	c.dropRaw()
	c.writing = false
	c.wmu.Unlock()
	c.stats.SendFailed.Add(int64(len(w.done)))
	c.completeAll(w, err)
}

// completeAll reports the outcome of the sends in w.done and drops their
// references to the handle.
func (c *conn) completeAll(w *writeState, err error) {
	for i := range w.done {
		r := &w.done[i]
		if err == nil {
			c.stats.Sent.Add(1)
		}
		if r.own != nil {
			putOut(r.own)
		}
		if r.done != nil {
			c.m.Complete(r.done, err)
		}
		c.h.Detach()
	}
	clear(w.done)
	w.done = w.done[:0]
}
