package dnsmsg

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rainbowduck/netmgr/nm"
)

// The sending side of the HTTP/2 connection loop. Send and SendAsync only
// queue: they frame the reply into the connection's output (or keep what
// the peer's window holds back with its stream) and wake the connection's
// writer, the one goroutine that writes. Everything queued (replies,
// statuses, resets, GOAWAY, ACKs, WINDOW_UPDATEs) counts toward one bound,
// HTTPConfig.MaxOutput: a connection past it is cut off.

// wakeLocked tells the writer there is output. Called with mu held.
func (c *h2conn) wakeLocked() {
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is pending: the writer will see this output too
	}
}

// kick wakes the writer if there is output.
func (c *h2conn) kick() {
	c.mu.Lock()
	if len(c.out) > 0 {
		c.wakeLocked()
	}
	c.mu.Unlock()
}

// writer is the connection's writing goroutine: it writes the output each
// time it is woken, until the reader ends (quit); then it fails what is
// left and returns.
func (c *h2conn) writer() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.wake:
			c.flush()
		case <-c.quit:
			c.flush()
			return
		}
	}
}

// flush writes the output until none is left: one batch per write (per
// stream's record over TLS). Only the writer runs it.
func (c *h2conn) flush() {
	for {
		c.mu.Lock()
		if len(c.out) == 0 {
			if c.flushed != nil {
				close(c.flushed)
				c.flushed = nil
			}
			c.mu.Unlock()
			return
		}
		out, cuts, dones := c.out, c.cuts, c.dones
		c.out, c.cuts, c.dones = c.spareOut[:0], c.spareCuts[:0], c.spareDones[:0]
		c.spareOut, c.spareCuts, c.spareDones = nil, nil, nil
		c.inWrite = len(out)
		broken := c.broken
		c.mu.Unlock()

		written, err := 0, broken
		if err == nil {
			written, err = c.writeOut(out, cuts)
		}
		c.wrote(dones, written, err, broken == nil)
		c.mu.Lock()
		c.inWrite = 0
		if err != nil && c.broken == nil {
			c.broken = err
		}
		if cap(out) <= 64<<10 {
			c.spareOut = out[:0]
		}
		c.spareCuts, c.spareDones = cuts[:0], dones[:0]
		c.mu.Unlock()
	}
}

// wrote reports the outcome of a write to the replies it carried: those
// wholly in the first written bytes went out, even if what followed them
// failed. A failed write ends the connection (first: it was this write
// that failed).
func (c *h2conn) wrote(dones []h2done, written int, err error, first bool) {
	sent := 0
	for _, d := range dones {
		derr := err
		if d.end <= written {
			derr = nil
			sent++
		}
		c.complete(d, derr)
	}
	c.stats.Sent.Add(int64(sent))
	c.stats.SendFailed.Add(int64(len(dones) - sent))
	if err != nil && first {
		if errors.Is(err, nm.ErrTimedOut) {
			c.stats.WriteTimeouts.Add(1)
		}
		c.abort() // the reader stops
	}
	clear(dones)
}

// abort closes the connection's socket at once, without a TLS
// close_notify (which would wait for a peer that does not read).
func (c *h2conn) abort() {
	if nc, ok := c.nc.(interface{ NetConn() net.Conn }); ok {
		nc.NetConn().Close()
		return
	}
	c.nc.Close()
}

// writeOut writes out with the write timeout; over TLS, each stream's end
// ends a record (see ServeConn). It returns how many of out's first bytes
// were surely written (all of them, unless err).
func (c *h2conn) writeOut(out []byte, cuts []int) (int, error) {
	nc := c.nc
	if c.write > 0 {
		nc.SetWriteDeadline(time.Now().Add(c.write))
	}
	if !c.isTLS {
		return c.writeChunk(out)
	}
	start := 0
	for _, end := range append(cuts, len(out)) {
		if end > start {
			if _, err := c.writeChunk(out[start:end]); err != nil {
				return start, err // records before this one went out
			}
			start = end
		}
	}
	return len(out), nil
}

func (c *h2conn) writeChunk(b []byte) (int, error) {
	c.stats.Writes.Add(1)
	n, err := c.nc.Write(b)
	return n, mapWriteErr(err)
}

func mapWriteErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nm.ErrTimedOut
	}
	return nm.ErrCanceled
}

// complete reports a reply's outcome to its sender, if it asked for it
// (SendAsync), through the manager: never on the sender's stack.
func (c *h2conn) complete(d h2done, err error) {
	if d.done != nil {
		c.s.m.Complete(d.done, err)
	}
}

// queuedLocked is the number of bytes the connection holds for the peer:
// output not written yet, the batch being written, and replies waiting
// for window. Called with mu held.
func (c *h2conn) queuedLocked() int { return len(c.out) + c.inWrite + c.held }

// checkOutLocked marks the connection over its output bound, for the
// reader or the sender to cut off. Called with mu held.
func (c *h2conn) checkOutLocked() {
	if c.queuedLocked() > c.maxOut {
		c.over.Store(true)
	}
}

// cut ends a connection whose output passed its bound: flood (the reader
// found it: output the peer provoked, counted Floods) or not (a reply did,
// counted OutputFull). Replies in progress fail with nm.ErrOutputFull.
func (c *h2conn) cut(flood bool) {
	c.mu.Lock()
	first := c.broken == nil
	if first {
		c.broken = nm.ErrOutputFull
	}
	c.mu.Unlock()
	if !first {
		return
	}
	if flood {
		c.stats.Floods.Add(1)
		c.s.m.Logger().Warn("dnsmsg: DoH flood cut: output the peer provoked and does not read", "peer", c.hc.peer, "max", c.maxOut)
	} else {
		c.stats.OutputFull.Add(1)
		c.s.m.Logger().Warn("dnsmsg: DoH output full, connection cut: the peer does not read", "peer", c.hc.peer, "max", c.maxOut)
	}
	c.abort()
}

var h2streamPool sync.Pool // *h2stream with its handle

// newStreamLocked returns a stream for id from the pool, in the streams,
// with the connection's reference and the handle's.
func (c *h2conn) newStreamLocked(id uint32) *h2stream {
	hc := c.hc
	st, _ := h2streamPool.Get().(*h2stream)
	if st == nil {
		st = &h2stream{}
		st.h = core.NewHandle(hc.shard, st, hc.realLocal, hc.realPeer)
	} else {
		st.h.Reuse(hc.shard, st, hc.realLocal, hc.realPeer)
	}
	st.h.SetProxied(hc.local, hc.peer)
	st.c, st.id, st.ep, st.clen, st.n, st.remoteOpen, st.charged = c, id, nil, -1, 0, false, 0
	st.get, st.status, st.msg = false, 0, nil
	st.recvWindow, st.deadline = h2StreamWindow, time.Time{}
	st.state, st.err, st.replied, st.slot, st.blocked, st.owned = stBody, nil, false, false, false, true
	st.sendWindow, st.pending, st.done, st.held = c.peerWindow, nil, nil, 0
	st.refs.Store(2)
	c.streams[id] = st
	return st
}

func (st *h2stream) unref() {
	if st.refs.Add(-1) == 0 {
		st.c, st.ep = nil, nil
		if cap(*st.h.Buf()) > 4096 {
			putBody(*st.h.Buf())
			(*st.h.Buf()) = nil
		}
		if cap(st.copy) > 4096 {
			st.copy = nil
		}
		h2streamPool.Put(st)
	}
}

// submit frames a reply for st into the output, as far as the peer's
// windows allow; the rest waits with the stream (copied first unless
// owned: SendAsync's b is the caller's until done). The writer is woken.
func (st *h2stream) submit(b []byte, done chan<- error, owned bool) error {
	switch {
	case len(b) < HeaderLen:
		return nm.ErrBadMessage
	case len(b) > MaxSize:
		return nm.ErrTooLarge
	}
	c := st.c
	c.mu.Lock()
	switch {
	case st.replied:
		c.mu.Unlock()
		return nm.ErrClosed
	case st.state != stWaiting:
		c.mu.Unlock()
		return closedBy(st.err)
	case c.broken != nil:
		c.mu.Unlock()
		return closedBy(c.broken)
	}
	st.replied = true
	c.releaseSlotLocked(st)
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: ContentType})
	c.enc.WriteField(hpack.HeaderField{Name: "cache-control", Value: cacheHeader(b)[0]})
	c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: lengthText(len(b))})
	c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	st.state, st.pending, st.done = stSending, b, done
	c.pushLocked(st)
	if st.blocked && !owned {
		st.copy = append(st.copy[:0], st.pending...)
		st.pending = st.copy
	}
	c.checkOutLocked()
	c.wakeLocked()
	c.mu.Unlock()
	if c.over.Load() {
		c.cut(false)
		return nm.ErrOutputFull
	}
	return nil
}

// lengths holds the decimal text of the lengths of common replies.
var lengths = func() []string {
	s := make([]string, 4096)
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func lengthText(n int) string {
	if n < len(lengths) {
		return lengths[n]
	}
	return strconv.Itoa(n)
}

// Send implements socket: the reply is queued for the stream, which it
// ends, and Send returns without waiting for the peer; b may be reused at
// once. A reply the peer does not take fails later, unseen (SendAsync
// reports it).
func (st *h2stream) Send(h core.Handle, b []byte) error { return st.submit(b, nil, false) }

// SendAsync implements socket: done gets the outcome once the reply is
// written or has failed, from the connection's writer.
func (st *h2stream) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	return st.submit(b, done, true)
}

// Read implements socket: a request handle is not read.
func (st *h2stream) Read(h core.Handle) <-chan nm.Event { return notReadable() }

// ReadStop implements socket.
func (st *h2stream) ReadStop(h core.Handle) {}

// Close implements socket: the stream is reset, unless a reply was
// sent.
func (st *h2stream) Close(h core.Handle) { st.abandon() }

// Released implements socket: a request released without a reply has
// its stream reset.
func (st *h2stream) Released(h core.Handle) {
	st.abandon()
	if r, ok := h.Data().(nm.Resetter); ok {
		r.Reset()
	}
	st.unref()
}

// abandon resets a delivered stream that has no reply.
func (st *h2stream) abandon() {
	c := st.c
	c.mu.Lock()
	if st.state != stWaiting || st.replied {
		c.mu.Unlock()
		return
	}
	if c.broken == nil {
		c.rstLocked(st.id, http2.ErrCodeCancel)
		c.checkOutLocked()
		c.wakeLocked()
	}
	c.closeLocked(st, nm.ErrClosed)
	c.mu.Unlock()
}

// closedBy is the error of a reply to a conversation that has ended: it
// matches nm.ErrClosed, as on every transport, and the reason it ended.
func closedBy(reason error) error {
	if reason == nil || errors.Is(reason, nm.ErrClosed) {
		return nm.ErrClosed
	}
	return fmt.Errorf("%w (%w)", nm.ErrClosed, reason)
}
