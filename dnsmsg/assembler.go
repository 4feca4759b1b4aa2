package dnsmsg

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/rainbowduck/netmgr/nm"
)

// ErrZeroLength reports a stream frame with a zero length prefix, which
// ends the connection.
var ErrZeroLength = fmt.Errorf("dnsmsg: zero-length message: %w", nm.ErrBadMessage)

// keptSmall is the buffer an assembler keeps a partial message in; larger
// ones are made to measure.
const keptSmall = 4096

var keptPool = sync.Pool{New: func() any { b := make([]byte, 0, keptSmall); return &b }}

// assembler turns the bytes of a DNS stream (TCP, TLS) into messages: each
// is preceded by its length as 2 bytes, big-endian (RFC 1035 4.2.2). A read
// may hold half a message or many; Write takes what was read and Next hands
// out complete messages one at a time, so the caller bounds the work per
// read by how many it takes.
//
// Complete messages are handed out from the written bytes themselves, with
// no copy; only the start of a message that a read cut off is copied, into
// a pooled buffer, and an assembler with nothing pending holds no buffer.
// An assembler is not safe for concurrent use.
type assembler struct {
	p    []byte  // p[off:] holds the bytes not yet handed out
	off  int     //
	kept *[]byte // the pooled buffer p lies in, or nil when p is borrowed from Write
	max  int     // largest message accepted
}

func newAssembler(max int) *assembler {
	a := &assembler{}
	a.init(max)
	return a
}

func (a *assembler) init(max int) {
	if max <= 0 || max > MaxSize {
		max = MaxSize
	}
	a.max = max
}

// Write hands over bytes read from the stream. They are borrowed, not
// copied, until Keep or the next Write, so the caller must not change
// them before. Write invalidates the message last returned by Next.
func (a *assembler) Write(p []byte) {
	if a.Buffered() == 0 {
		a.release()
		a.p, a.off = p, 0
		return
	}
	a.own(len(p))
	a.p = append(a.p, p...)
	*a.kept = a.p
}

// Keep copies the bytes still pending out of the caller's buffer, which it
// may then reuse; with nothing pending, the assembler lets go of every
// buffer.
func (a *assembler) Keep() {
	switch {
	case a.Buffered() == 0:
		a.release()
		a.p, a.off = nil, 0
	case a.kept == nil:
		a.own(0)
	}
}

// own moves the pending bytes to the start of a buffer of the assembler's
// own with room for extra more.
func (a *assembler) own(extra int) {
	pending := a.p[a.off:]
	need := len(pending) + extra
	if a.kept != nil && cap(*a.kept) >= need {
		a.p, a.off = (*a.kept)[:copy((*a.kept)[:cap(*a.kept)], pending)], 0
		*a.kept = a.p
		return
	}
	var b *[]byte
	if need <= keptSmall {
		b = keptPool.Get().(*[]byte)
	} else {
		// Room for the whole message once its length is known, so that a
		// message trickling in is copied once, not once per read.
		size := need
		if len(pending) >= 2 {
			size = max(size, 2+min(int(binary.BigEndian.Uint16(pending)), a.max))
		}
		if a.kept != nil {
			size = max(size, 2*cap(*a.kept))
		}
		s := make([]byte, 0, size)
		b = &s
	}
	*b = append((*b)[:0], pending...)
	a.release()
	a.kept, a.p, a.off = b, *b, 0
}

// release gives back the pooled buffer, if any.
func (a *assembler) release() {
	if a.kept == nil {
		return
	}
	if cap(*a.kept) == keptSmall {
		*a.kept = (*a.kept)[:0]
		keptPool.Put(a.kept)
	}
	a.kept = nil
}

// Next returns the next complete message, valid until the next Write, Keep
// or Clear, or nil if none is complete yet. A zero length prefix or a
// message longer than the maximum is an error that the stream cannot
// recover from.
func (a *assembler) Next() ([]byte, error) {
	pending := a.p[a.off:]
	if len(pending) < 2 {
		return nil, nil
	}
	n := int(binary.BigEndian.Uint16(pending))
	switch {
	case n == 0:
		return nil, ErrZeroLength
	case n > a.max:
		return nil, fmt.Errorf("dnsmsg: %d-byte message over the %d-byte limit: %w", n, a.max, nm.ErrTooLarge)
	case len(pending) < 2+n:
		return nil, nil
	}
	a.off += 2 + n
	return pending[2 : 2+n], nil
}

// Buffered returns how many bytes wait for the rest of their message.
func (a *assembler) Buffered() int { return len(a.p) - a.off }

// Clear drops everything pending and every buffer; it may be called between
// calls to Next, and a following Next returns nil.
func (a *assembler) Clear() {
	a.release()
	a.p, a.off = nil, 0
}

// appendFrame appends msg with its 2-byte length prefix to b.
func appendFrame(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}
