package dnsmsg

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/rainbowduck/netmgr/nm"
)

// ErrZeroLength reports a stream frame with a zero length prefix, which
// ends the connection.
var ErrZeroLength = fmt.Errorf("dnsmsg: zero-length message: %w", nm.ErrBadMessage)

// errOverBudget ends a connection whose partial message would take the
// listener's buffered request bytes past ServerConfig.MaxBuffered.
var errOverBudget = fmt.Errorf("dnsmsg: the listener's buffered request bytes are at their cap: %w", nm.ErrTooLarge)

// keptClasses are the sizes of the buffers an assembler keeps a partial
// message in: it moves up a class as bytes arrive, never to the length a
// prefix announces, so a buffer holds at most twice the bytes received
// (and at least 512). The last holds the largest message with its prefix.
var keptClasses = [...]int{512, 1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, MaxSize + 2}

var keptPools [len(keptClasses)]sync.Pool

func init() {
	for i, size := range keptClasses {
		keptPools[i].New = func() any { b := make([]byte, 0, size); return &b }
	}
}

// budget caps the bytes that the assemblers of a listener's connections
// keep, all together (the capacity of their buffers). Safe for
// concurrent use.
type budget struct {
	used atomic.Int64
	max  int64
}

// take reserves n bytes, or reports false (reserving nothing) past the cap.
func (b *budget) take(n int) bool {
	if b.used.Add(int64(n)) <= b.max {
		return true
	}
	b.used.Add(-int64(n))
	return false
}

func (b *budget) give(n int) { b.used.Add(-int64(n)) }

// assembler turns the bytes of a DNS stream (TCP, TLS) into messages: each
// is preceded by its length as 2 bytes, big-endian (RFC 1035 4.2.2). A read
// may hold half a message or many; Write takes what was read and Next hands
// out complete messages one at a time, so the caller bounds the work per
// read by how many it takes.
//
// Complete messages are handed out from the written bytes themselves, with
// no copy. Only the start of a message that a read cut off is copied, by
// Keep, into a pooled buffer that grows by size class with the bytes that
// arrive (never to the length announced), so an assembler holds at most
// one partial message (at most 65 536 bytes, in a buffer of at most twice
// the bytes received) besides the caller's read buffer; one with nothing
// pending holds no buffer. An assembler is not safe for concurrent use.
type assembler struct {
	kept *[]byte // the start of a message a read cut off (after the done bytes), or nil
	done int     // bytes at the start of kept that Next handed out: dropped at the next Next or Keep
	src  []byte  // the bytes of the last Write not yet handed out, borrowed
	max  int     // largest message accepted
	cap  *budget // the listener's, or nil for none
	err  error   // sticky: the stream cannot go on
}

func newAssembler(max int) *assembler {
	a := &assembler{}
	a.init(max, nil)
	return a
}

func (a *assembler) init(max int, b *budget) {
	if max <= 0 || max > MaxSize {
		max = MaxSize
	}
	a.max, a.cap = max, b
}

// Write hands over bytes read from the stream. They are borrowed, not
// copied, until Keep or the next Write, so the caller must not change
// them before. Write invalidates the message last returned by Next.
func (a *assembler) Write(p []byte) {
	if len(a.src) > 0 {
		a.Keep()
	}
	a.src = p
}

// Keep copies the bytes still pending out of the caller's buffer, which it
// may then reuse; with nothing pending, the assembler lets go of every
// buffer.
func (a *assembler) Keep() {
	a.dropDone()
	switch {
	case a.Buffered() == 0:
		a.release()
		a.src = nil
	case len(a.src) > 0:
		a.src = a.take(a.src, len(a.src))
		if a.err != nil {
			a.src = nil // not kept: the caller's buffer is no longer ours
		}
	}
}

// Next returns the next complete message, valid until the next Write, Keep
// or Clear, or nil if none is complete yet. A zero length prefix, a message
// longer than the maximum, or a partial message the listener's budget has
// no room for is an error that the stream cannot recover from.
func (a *assembler) Next() ([]byte, error) {
	a.dropDone()
	if a.err != nil {
		return nil, a.err
	}
	if a.kept != nil && len(*a.kept) > 0 {
		return a.nextKept()
	}
	n, err := a.length(a.src)
	if n < 0 || err != nil || len(a.src) < 2+n {
		return nil, err
	}
	msg := a.src[2 : 2+n]
	a.src = a.src[2+n:]
	return msg, nil
}

// nextKept completes the partial message with the bytes written since, as
// far as they go.
func (a *assembler) nextKept() ([]byte, error) {
	if k := len(*a.kept); k < 2 {
		a.src = a.take(a.src, 2-k)
	}
	n, err := a.length(*a.kept)
	if n < 0 || err != nil {
		return nil, err
	}
	a.src = a.take(a.src, 2+n-len(*a.kept))
	if a.err != nil || len(*a.kept) < 2+n {
		return nil, a.err
	}
	a.done = 2 + n
	return (*a.kept)[2 : 2+n], nil
}

// length returns the length that b's prefix announces, or -1 if b holds
// less than a prefix.
func (a *assembler) length(b []byte) (int, error) {
	if len(b) < 2 {
		return -1, nil
	}
	n := int(binary.BigEndian.Uint16(b))
	switch {
	case n == 0:
		a.err = ErrZeroLength
	case n > a.max:
		a.err = fmt.Errorf("dnsmsg: %d-byte message over the %d-byte limit: %w", n, a.max, nm.ErrTooLarge)
	}
	return n, a.err
}

// take moves up to n bytes from the front of src to kept and returns the
// rest of src.
func (a *assembler) take(src []byte, n int) []byte {
	n = min(n, len(src))
	if n <= 0 || !a.grow(n) {
		return src
	}
	*a.kept = append(*a.kept, src[:n]...)
	return src[n:]
}

// grow makes room in kept for n more bytes: the smallest class that holds
// them, within the listener's budget. It reports false, with a.err set,
// when the budget has no room.
func (a *assembler) grow(n int) bool {
	have := 0
	if a.kept != nil {
		have = len(*a.kept)
		if cap(*a.kept) >= have+n {
			return true
		}
	}
	old := 0
	if a.kept != nil {
		old = cap(*a.kept)
	}
	b := a.class(have + n)
	if a.cap != nil && !a.cap.take(cap(*b)-old) {
		a.put(b)
		a.err = errOverBudget
		return false
	}
	if a.kept != nil {
		*b = append((*b)[:0], *a.kept...)
		a.put(a.kept)
	}
	a.kept = b
	return true
}

// class returns an empty buffer of the smallest class that holds n bytes
// (made to measure past the largest, which only bytes written twice
// without Next in between can need).
func (a *assembler) class(n int) *[]byte {
	for i, size := range keptClasses {
		if n <= size {
			return keptPools[i].Get().(*[]byte)
		}
	}
	b := make([]byte, 0, n)
	return &b
}

// put gives a kept buffer back to its pool; its budget stays taken.
func (a *assembler) put(b *[]byte) {
	for i, size := range keptClasses {
		if cap(*b) == size {
			*b = (*b)[:0]
			keptPools[i].Put(b)
			return
		}
	}
}

// dropDone forgets the message in kept that Next handed out.
func (a *assembler) dropDone() {
	if a.done > 0 {
		k := *a.kept
		*a.kept = k[:copy(k, k[a.done:])]
		a.done = 0
	}
}

// release gives back the kept buffer, if any, and its budget.
func (a *assembler) release() {
	if a.kept == nil {
		return
	}
	if a.cap != nil {
		a.cap.give(cap(*a.kept))
	}
	a.put(a.kept)
	a.kept = nil
}

// Buffered returns how many bytes wait for the rest of their message or
// for Next.
func (a *assembler) Buffered() int {
	n := len(a.src)
	if a.kept != nil {
		n += len(*a.kept) - a.done
	}
	return n
}

// Err returns the error that ended the stream (Next returns it too), or
// nil.
func (a *assembler) Err() error { return a.err }

// Held returns the capacity of the buffer the assembler keeps, for tests.
func (a *assembler) Held() int {
	if a.kept == nil {
		return 0
	}
	return cap(*a.kept)
}

// Clear drops everything pending and every buffer; it may be called between
// calls to Next, and a following Next returns nil.
func (a *assembler) Clear() {
	a.done = 0
	a.release()
	a.src = nil
}

// appendFrame appends msg with its 2-byte length prefix to b.
func appendFrame(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}
