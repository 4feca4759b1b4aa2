package stream

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/transport"

	"github.com/rainbowduck/netmgr/nm"
)

// tlsChunk is the most plaintext the writer hands to one TLS Write: the
// queued replies are coalesced into as few records as that allows.
const tlsChunk = 16 << 10

// maxIov bounds the buffers of one writev (the kernel's IOV_MAX).
const maxIov = 1024

// writeState is the scratch space of the goroutine holding a connection's
// writing flag, taken from a pool while it writes: an idle connection
// holds none.
type writeState struct {
	c      *conn
	bufs   [][]byte        // what the next write writes, in order
	done   []sendReq       // sends just completed, reported outside wmu
	tlsBuf []byte          // plaintext coalesced for one TLS Write
	pfx    [maxPrefix]byte // a sender's prefix, copied
	sys    sysWriter       // the platform's write machinery
}

var writeStates = sync.Pool{New: func() any {
	w := new(writeState)
	w.sys.init(w)
	return w
}}

func getWriteState(c *conn) *writeState {
	w := writeStates.Get().(*writeState)
	w.c = c
	return w
}

func putWriteState(w *writeState) {
	if cap(w.tlsBuf) > 64<<10 {
		w.tlsBuf = nil
	}
	clear(w.bufs)
	w.bufs = w.bufs[:0]
	w.c = nil
	writeStates.Put(w)
}

// setIov makes prefix and b the next write.
func (w *writeState) setIov(prefix, b []byte) {
	w.bufs = w.bufs[:0]
	if len(prefix) > 0 {
		w.bufs = append(w.bufs, prefix)
	}
	w.bufs = append(w.bufs, b)
}

// gather makes the queue, less its first skip bytes (written already),
// the next write: at most maxIov buffers.
func (w *writeState) gather(q []sendReq, skip int) {
	w.bufs = w.bufs[:0]
	for i := range q {
		if len(w.bufs) >= maxIov-1 {
			return
		}
		r := &q[i]
		skip = w.add(r.pfx[:r.npfx], skip)
		skip = w.add(r.b, skip)
	}
}

func (w *writeState) add(b []byte, skip int) int {
	if skip >= len(b) {
		return skip - len(b)
	}
	w.bufs = append(w.bufs, b[skip:])
	return 0
}

// writeTimeout returns the write timeout in force.
func (c *conn) writeTimeout() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t.Write
}

// armWrite sets the socket's write deadline for a write that waits, and
// reports false if the output broke meanwhile (see breakOutput: the
// deadline it sets in the past then wins).
func (c *conn) armWrite() bool {
	var deadline time.Time
	if wt := c.writeTimeout(); wt > 0 {
		deadline = time.Now().Add(wt)
	}
	c.tcp.SetWriteDeadline(deadline)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.broken == nil
}

// writeRaw writes w.bufs with one writev. If wait is false it does not
// wait for room in the socket (n is then 0 when there is none); else it
// waits, within the write timeout, and nm.ErrTimedOut reports that the
// peer took nothing for that long.
func (c *conn) writeRaw(w *writeState, wait bool) (int, error) {
	if wait && !c.armWrite() {
		return 0, nm.ErrClosed
	}
	n, err := w.sys.write(c, w, wait)
	if wait {
		c.tcp.SetWriteDeadline(time.Time{})
	}
	if n > 0 {
		c.stats.Writes.Add(1)
	}
	if err != nil {
		return n, core.MapError(err)
	}
	return n, nil
}

// encode hands prefix and b, as one TLS Write (one record), to the TLS
// connection, which puts the record in the output (see wire).
func (c *conn) encode(w *writeState, prefix, b []byte) error {
	msg := b
	if len(prefix) > 0 {
		w.tlsBuf = append(append(w.tlsBuf[:0], prefix...), b...)
		msg = w.tlsBuf
	}
	_, err := c.tls.Write(msg)
	c.unsentDone(len(prefix) + len(b))
	if err != nil {
		return core.MapError(err)
	}
	c.stats.Sent.Add(1)
	return nil
}

// encodeQueue takes the whole queue and hands it to the TLS connection,
// coalesced into as few records as possible; the sends complete once
// their records are written. Called with wmu held; it unlocks.
func (c *conn) encodeQueue(w *writeState) bool {
	w.done = append(w.done[:0], c.queue...)
	c.shift(len(c.queue))
	c.wmu.Unlock()
	n := 0
	w.bufs = w.bufs[:0]
	for i := range w.done {
		r := &w.done[i]
		if r.npfx > 0 {
			w.bufs = append(w.bufs, r.pfx[:r.npfx])
		}
		w.bufs = append(w.bufs, r.b)
		n += r.size()
	}
	err := c.writeTLS(w)
	c.unsentDone(n)
	if err == nil {
		err = c.flushAll(w)
	}
	if err != nil {
		err = core.MapError(err)
		c.writeFailed(err, len(w.done))
		if err == nm.ErrClosed {
			err = nm.ErrCanceled
		}
	}
	c.completeAll(w, err)
	return true
}

// flushAll writes the TLS records waiting, each wait for the peer within
// the write timeout.
func (c *conn) flushAll(w *writeState) error {
	for {
		c.wmu.Lock()
		n, broken := c.rawLen(), c.broken
		c.wmu.Unlock()
		switch {
		case broken != nil:
			return broken
		case n == 0:
			return nil
		}
		if err := c.writeRawOut(w, true); err != nil {
			return err
		}
	}
}

// writeTLS coalesces w.bufs into as few TLS records as possible.
func (c *conn) writeTLS(w *writeState) error {
	out := w.tlsBuf[:0]
	for _, b := range w.bufs {
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

// appendRaw puts TLS records in the output (wire.Write, once the
// connection is ready). It never waits: the goroutine holding the writing
// flag writes them, or a writer goroutine started here.
func (c *conn) appendRaw(b []byte) (int, error) {
	c.wmu.Lock()
	if c.broken != nil {
		err := c.broken
		c.wmu.Unlock()
		return 0, err
	}
	if c.raw == nil {
		c.raw = getOut(len(b))
	}
	*c.raw = append(*c.raw, b...)
	c.unsent += len(b)
	start := !c.writing
	c.writing = true
	c.wmu.Unlock()
	if start {
		c.startWriter()
	}
	return len(b), nil
}

// rawLen returns how many bytes of TLS records wait. Called with wmu held.
func (c *conn) rawLen() int {
	if c.raw == nil {
		return 0
	}
	return len(*c.raw)
}

// dropRaw lets the records waiting go. Called with wmu held.
func (c *conn) dropRaw() {
	if c.raw != nil {
		putOut(c.raw)
		c.raw = nil
	}
}

// flushRaw writes TLS records, waiting for the peer within the write
// timeout. It runs on the writer goroutine.
func (c *conn) flushRaw(w *writeState) bool {
	if err := c.writeRawOut(w, true); err != nil {
		c.writeFailed(err, 0)
	}
	return true
}

// flushRawNow makes one attempt at writing the TLS records that does not
// wait; what is left is the writer goroutine's.
func (c *conn) flushRawNow(w *writeState) error { return c.writeRawOut(w, false) }

func (c *conn) writeRawOut(w *writeState, wait bool) error {
	c.wmu.Lock()
	if c.rawLen() == 0 {
		c.wmu.Unlock()
		return nil
	}
	w.bufs = append(w.bufs[:0], *c.raw)
	c.wmu.Unlock()
	n, err := c.writeRaw(w, wait)
	c.wmu.Lock()
	if n > 0 {
		rest := copy(*c.raw, (*c.raw)[n:])
		*c.raw = (*c.raw)[:rest]
		c.unsent -= n
		if rest == 0 {
			c.dropRaw()
		}
	}
	c.wmu.Unlock()
	c.signal()
	return err
}

// wire is the net.Conn under a stream connection's tls.Conn. Until the
// connection is ready (through the handshake) writes go straight to the
// socket; from then on they go to the connection's output (appendRaw), so
// that writing a TLS record never waits for the peer. Reads, and writes
// to the socket, are raw system calls (see transport.RawIO).
type wire struct {
	*net.TCPConn
	out atomic.Pointer[conn] // nil: write to the socket
	io  transport.RawIO
}

func newWire(tc *net.TCPConn) (*wire, error) {
	w := &wire{TCPConn: tc}
	if err := w.io.Init(tc); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *wire) Read(b []byte) (int, error) { return w.io.Read(b) }

func (w *wire) Write(b []byte) (int, error) {
	if c := w.out.Load(); c != nil {
		return c.appendRaw(b)
	}
	return w.io.Write(b)
}

// Output copies come in size classes, so that a queued reply holds at
// most four times its size (a classic 512-byte DNS reply with its length
// prefix fits the second); larger ones are made to measure.
var outClasses = [...]int{128, 576, 2 << 10, 8 << 10, 17 << 10, 66 << 10}

var outPools [len(outClasses)]sync.Pool

func init() {
	for i, size := range outClasses {
		outPools[i].New = func() any {
			b := make([]byte, 0, size)
			return &b
		}
	}
}

// getOut returns an empty buffer with room for n bytes.
func getOut(n int) *[]byte {
	for i, size := range outClasses {
		if n <= size {
			return outPools[i].Get().(*[]byte)
		}
	}
	b := make([]byte, 0, n)
	return &b
}

// putOut gives a buffer from getOut back.
func putOut(b *[]byte) {
	for i, size := range outClasses {
		if cap(*b) == size {
			*b = (*b)[:0]
			outPools[i].Put(b)
			return
		}
	}
}
