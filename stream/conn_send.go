package stream

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/nm"
)

// tlsChunk is the most plaintext the writer hands to one TLS Write: the
// queued replies are coalesced into as few records as that allows.
const tlsChunk = 16 << 10

var donePool = sync.Pool{New: func() any { return make(chan error, 1) }}

// writeState is the scratch space of the goroutine writing a connection,
// taken from a pool while it writes: an idle connection holds none.
type writeState struct {
	spare  []sendReq   // the next queue, reused
	bufs   [][]byte    // a batch's buffers
	vec    net.Buffers // writev's vector, consumed by each write
	vecBuf [][]byte    // vec's backing array, kept for reuse
	one    [2][]byte   // a synchronous send's buffers
	pfx    [maxPrefix]byte
	tlsBuf []byte
}

var writeStates = sync.Pool{New: func() any { return new(writeState) }}

func putWriteState(w *writeState) {
	if cap(w.tlsBuf) > 64<<10 {
		w.tlsBuf = nil
	}
	writeStates.Put(w)
}

// maxPrefix is the longest prefix SendPrefixed takes.
const maxPrefix = 8

// Send implements nm.Socket: it writes b and waits for the outcome. When no
// write is in progress it writes from the caller's goroutine.
func (c *conn) Send(h nm.Handle, b []byte) error { return c.send(h, nil, b) }

// SendAsync implements nm.Socket: it queues b for the writer goroutine.
// The send holds a reference to h until it completes.
func (c *conn) SendAsync(h nm.Handle, b []byte, done chan<- error) error {
	return c.sendAsync(h, nil, b, done)
}

// SendPrefixed is Send of prefix and b as one message: nothing else goes
// between them, TCP writes both with one writev and TLS puts them in one
// record. prefix, at most 8 bytes (a length, say), is copied. Handles
// that are not stream connections get ErrNotSupported.
func SendPrefixed(h nm.Handle, prefix, b []byte) error {
	c, ok := h.Socket().(*conn)
	if !ok || len(prefix) > maxPrefix {
		return nm.ErrNotSupported
	}
	return c.send(h, prefix, b)
}

// SendPrefixedAsync is SendAsync of prefix and b as one message, as
// SendPrefixed.
func SendPrefixedAsync(h nm.Handle, prefix, b []byte, done chan<- error) error {
	c, ok := h.Socket().(*conn)
	if !ok || len(prefix) > maxPrefix {
		return nm.ErrNotSupported
	}
	return c.sendAsync(h, prefix, b, done)
}

func (c *conn) send(h nm.Handle, prefix, b []byte) error {
	c.wmu.Lock()
	if c.broken != nil {
		c.wmu.Unlock()
		return nm.ErrClosed
	}
	if c.writing {
		c.wmu.Unlock()
		done := donePool.Get().(chan error)
		if err := c.sendAsync(h, prefix, b, done); err != nil {
			donePool.Put(done)
			return err
		}
		err := <-done
		donePool.Put(done)
		return err
	}
	c.writing = true
	size := len(prefix) + len(b)
	c.unsent += size
	c.wmu.Unlock()
	w := writeStates.Get().(*writeState)
	bufs := w.one[:0]
	if len(prefix) > 0 {
		bufs = append(bufs, w.pfx[:copy(w.pfx[:], prefix)])
	}
	err := c.write(w, append(bufs, b), 1)
	clear(w.one[:])
	putWriteState(w)
	c.wmu.Lock()
	c.unsent -= size
	more := len(c.queue) > 0
	if !more {
		c.writing = false
	}
	c.wmu.Unlock()
	c.signal()
	if more {
		c.startWriter()
	}
	return err
}

func (c *conn) sendAsync(h nm.Handle, prefix, b []byte, done chan<- error) error {
	size := len(prefix) + len(b)
	c.wmu.Lock()
	switch {
	case c.broken != nil:
		c.wmu.Unlock()
		return nm.ErrClosed
	case c.unsent > 0 && c.unsent+size > c.sendQueue:
		c.wmu.Unlock()
		c.stats.SendFailed.Add(1)
		return nm.ErrQuota
	}
	h.Attach()
	r := sendReq{b: b, done: done, npfx: uint8(len(prefix))}
	copy(r.pfx[:], prefix)
	c.queue = append(c.queue, r)
	c.unsent += size
	start := !c.writing
	c.writing = true
	c.wmu.Unlock()
	if start {
		c.startWriter()
	}
	return nil
}

func (c *conn) startWriter() {
	if err := c.m.Go(c.writeLoop); err != nil {
		// The manager is closing: fail what is queued.
		c.closeSocket(false)
		c.writeLoop()
	}
}

// writeLoop writes the queue until it is empty. Only the goroutine holding
// the writing flag runs it.
func (c *conn) writeLoop() {
	w := writeStates.Get().(*writeState)
	defer putWriteState(w)
	for {
		c.wmu.Lock()
		if len(c.queue) == 0 {
			c.writing = false
			c.wmu.Unlock()
			c.signal()
			return
		}
		batch := c.queue
		c.queue = w.spare[:0]
		broken := c.broken
		c.wmu.Unlock()

		n := 0
		bufs := w.bufs[:0]
		for i := range batch {
			r := &batch[i]
			if r.npfx > 0 {
				bufs = append(bufs, r.pfx[:r.npfx])
			}
			bufs = append(bufs, r.b)
			n += int(r.npfx) + len(r.b)
		}
		err := broken
		switch {
		case err == nil:
			err = c.write(w, bufs, len(batch))
		case err == nm.ErrClosed:
			err = nm.ErrCanceled // queued, then the handle closed
		}
		c.wmu.Lock()
		c.unsent -= n
		c.wmu.Unlock()
		c.signal()
		for i := range batch {
			c.complete(batch[i].done, err)
			batch[i] = sendReq{}
		}
		w.spare = batch[:0]
		clear(bufs)
		w.bufs = bufs[:0]
	}
}

// complete reports a send's outcome and drops its reference to the handle.
// It waits for room in done, but not past the manager's shutdown.
func (c *conn) complete(done chan<- error, err error) {
	c.m.Complete(done, err)
	c.h.Detach()
}

// write writes bufs, which hold msgs messages, in order with the write
// timeout. A timeout resets the connection; any failure makes later sends
// fail at once.
func (c *conn) write(w *writeState, bufs [][]byte, msgs int) error {
	c.mu.Lock()
	wt := c.t.Write
	c.mu.Unlock()
	var deadline time.Time
	if wt > 0 {
		deadline = time.Now().Add(wt)
	}
	c.nc.SetWriteDeadline(deadline)
	var err error
	if c.tls != nil {
		err = c.writeTLS(w, bufs)
	} else if len(bufs) == 1 {
		_, err = c.tcp.Write(bufs[0])
	} else {
		// WriteTo consumes vec; vecBuf keeps the backing array for reuse.
		w.vecBuf = append(w.vecBuf[:0], bufs...)
		w.vec = w.vecBuf
		_, err = w.vec.WriteTo(c.tcp)
		clear(w.vecBuf)
	}
	if err == nil {
		c.stats.Sent.Add(int64(msgs))
		return nil
	}
	c.stats.SendFailed.Add(int64(msgs))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = nm.ErrTimedOut
		c.shutdown(nm.ErrTimedOut)
		c.closeSocket(true)
	} else {
		err = nm.MapError(err)
	}
	c.wmu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.wmu.Unlock()
	return err
}

// writeTLS coalesces bufs into as few TLS records as possible.
func (c *conn) writeTLS(w *writeState, bufs [][]byte) error {
	if len(bufs) == 1 {
		_, err := c.tls.Write(bufs[0])
		return err
	}
	out := w.tlsBuf[:0]
	for _, b := range bufs {
		if len(out) > 0 && len(out)+len(b) > tlsChunk {
			if _, err := c.tls.Write(out); err != nil {
				return err
			}
			out = out[:0]
		}
		if len(b) >= tlsChunk {
			if _, err := c.tls.Write(b); err != nil {
				return err
			}
			continue
		}
		out = append(out, b...)
	}
	w.tlsBuf = out[:0]
	if len(out) > 0 {
		_, err := c.tls.Write(out)
		return err
	}
	return nil
}
