package dnsmsg

import (
	"encoding/binary"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/nm"
)

// HeaderLen is the length of a DNS message header.
const HeaderLen = 12

// MaxSize is the largest DNS message on any transport.
const MaxSize = 65535

// ID returns the message ID of the wire message b, which must be at least
// HeaderLen bytes long.
func ID(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// IsResponse reports whether the wire message b has the QR bit set.
func IsResponse(b []byte) bool { return len(b) > 2 && b[2]&0x80 != 0 }

// SetResponse sets the QR bit of the wire message b in place.
func SetResponse(b []byte) {
	if len(b) > 2 {
		b[2] |= 0x80
	}
}

// Parse unpacks the wire message b with github.com/miekg/dns.
func Parse(b []byte) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return nil, err
	}
	return m, nil
}

// Smallest sizes of a question (root name, type, class) and of a resource
// record (root name, type, class, TTL, RDLENGTH).
const (
	minQuestion = 1 + 2 + 2
	minRR       = 1 + 2 + 2 + 4 + 2
)

// checkRequest accepts what may be a DNS request: a full header, QR clear,
// and section counts that fit in the message. It reads only the header, so
// it costs nothing per message, yet random bytes almost never pass.
func checkRequest(b []byte) error {
	if len(b) < HeaderLen || IsResponse(b) {
		return nm.ErrBadMessage
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	rr := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	if HeaderLen+qd*minQuestion+rr*minRR > len(b) {
		return nm.ErrBadMessage
	}
	return nil
}

// unsafeBytes views s as bytes, for reading only.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// errorReply appends to dst an answer to the request req with rcode and
// nothing else: req's ID, opcode, RD bit and, when it can be found, its
// first question; QR set. It returns nil when req is shorter than a header.
func errorReply(dst, req []byte, rcode int) []byte {
	if len(req) < HeaderLen {
		return nil
	}
	dst = append(dst, req[:HeaderLen]...)
	h := dst[len(dst)-HeaderLen:]
	h[2] = 0x80 | req[2]&0x79 // QR, keep opcode and RD
	h[3] = byte(rcode & 0x0f)
	clear(h[4:])
	if q := firstQuestion(req); q != nil {
		h[5] = 1
		dst = append(dst, q...)
	}
	return dst
}

// firstQuestion returns the wire bytes of req's first question, or nil if
// it has none or it is malformed. Compression pointers, legal but rare in a
// question, are not followed: such a question is left out.
func firstQuestion(req []byte) []byte {
	if binary.BigEndian.Uint16(req[4:]) == 0 {
		return nil
	}
	off := HeaderLen
	for off < len(req) {
		n := int(req[off])
		switch {
		case n == 0:
			end := off + 1 + 4 // type and class
			if end > len(req) {
				return nil
			}
			return req[HeaderLen:end]
		case n > 63:
			return nil
		}
		off += 1 + n
	}
	return nil
}
