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
