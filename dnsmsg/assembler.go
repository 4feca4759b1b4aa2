package dnsmsg

import (
	"encoding/binary"
	"fmt"

	"github.com/rainbowduck/netmgr/nm"
)

// ErrZeroLength reports a stream frame with a zero length prefix, which
// ends the connection.
var ErrZeroLength = fmt.Errorf("dnsmsg: zero-length message: %w", nm.ErrBadMessage)

// assemblerStart is the buffer an assembler starts with; it grows only for
// large messages.
const assemblerStart = 4096

// assembler turns the bytes of a DNS stream (TCP, TLS) into messages: each
// is preceded by its length as 2 bytes, big-endian (RFC 1035 4.2.2). A read
// may hold half a message or many; Write takes what was read and Next hands
// out complete messages one at a time, so the caller bounds the work per
// read by how many it takes. An assembler is not safe for concurrent use.
type assembler struct {
	buf []byte // buf[off:] holds bytes not yet handed out
	off int
	max int // largest message accepted
}

func newAssembler(max int) *assembler {
	if max <= 0 || max > MaxSize {
		max = MaxSize
	}
	return &assembler{max: max}
}

// Write appends bytes read from the stream. It invalidates the message last
// returned by Next.
func (a *assembler) Write(p []byte) {
	if a.off > 0 && (a.off == len(a.buf) || len(a.buf)+len(p) > cap(a.buf)) {
		// Move what is pending to the front rather than grow.
		n := copy(a.buf, a.buf[a.off:])
		a.buf, a.off = a.buf[:n], 0
	}
	if a.buf == nil {
		a.buf = make([]byte, 0, max(assemblerStart, len(p)))
	}
	a.buf = append(a.buf, p...)
}

// Next returns the next complete message, valid until the next Write or
// Clear, or nil if none is complete yet. A zero length prefix or a message
// longer than the maximum is an error that the stream cannot recover from.
func (a *assembler) Next() ([]byte, error) {
	pending := a.buf[a.off:]
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
func (a *assembler) Buffered() int { return len(a.buf) - a.off }

// Clear drops everything buffered; it may be called between calls to Next,
// and a following Next returns nil.
func (a *assembler) Clear() {
	a.buf, a.off = a.buf[:0], 0
}

// appendFrame appends msg with its 2-byte length prefix to b.
func appendFrame(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}
