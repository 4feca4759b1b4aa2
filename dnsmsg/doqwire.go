package dnsmsg

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"

	"github.com/rainbowduck/netmgr/nm"
)

// Errors of a DoQ stream's framing (RFC 9250 4.2): each is a protocol
// error, which ends the connection with DOQ_PROTOCOL_ERROR.
var (
	// errDoQEarlyFIN: the stream ended before its whole message.
	errDoQEarlyFIN = errors.New("dnsmsg: DoQ stream ended before its whole message")
	// errDoQTrailing: bytes after the message (a second query on the stream).
	errDoQTrailing = errors.New("dnsmsg: DoQ stream carries more than one message")
	// errDoQZeroLength: a message of length zero.
	errDoQZeroLength = errors.New("dnsmsg: DoQ message of length zero")
)

// doqGrowStep is how much a DoQ stream's buffer grows at a time: the
// buffer follows the bytes received, never the length announced, so a
// peer that announces 65535 bytes and sends one costs one step.
const doqGrowStep = 512

// readDoQMessage reads one length-prefixed message and the stream's end
// from r into buf, which it grows as bytes arrive (never past the
// announced length, at most MaxSize), keeping 2 bytes of room in front for
// the reply's prefix. It returns buf[:2+n], whose bytes from 2 on are the
// message; errors are those of r (a deadline, a reset) or the framing
// errors above.
func readDoQMessage(r io.Reader, buf []byte) ([]byte, error) {
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return buf[:0], errDoQEarlyFIN
		}
		return buf[:0], err
	}
	n := int(binary.BigEndian.Uint16(p[:]))
	if n == 0 {
		return buf[:0], errDoQZeroLength
	}
	buf = append(buf[:0], 0, 0)
	for len(buf) < 2+n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(doqGrowStep, 2+n-len(buf)))
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), 2+n)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < 2+n {
			if errors.Is(err, io.EOF) {
				return buf, errDoQEarlyFIN
			}
			return buf, err
		}
	}
	return buf, readDoQEnd(r)
}

// readDoQEnd waits for the end of the stream after its message.
func readDoQEnd(r io.Reader) error {
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		switch {
		case n > 0:
			return errDoQTrailing
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
	}
}

// EDNS(0) option codes the DoQ server looks at.
const (
	optTCPKeepalive = 11 // RFC 7828: not allowed over DoQ (RFC 9250 5.5.2)
	optPadding      = 12 // RFC 7830
)

// doqPadBlock is the block size responses are padded to (RFC 8467 4.1).
const doqPadBlock = 468

// optRR locates the OPT record of the wire message b: the offsets of its
// RDATA and of its end; ok is false when b has none or is malformed.
func optRR(b []byte) (rdata, end int, ok bool) {
	if len(b) < HeaderLen || binary.BigEndian.Uint16(b[10:]) == 0 {
		return 0, 0, false
	}
	off := HeaderLen
	for range binary.BigEndian.Uint16(b[4:]) {
		if off = skipName(b, off); off < 0 || off+4 > len(b) {
			return 0, 0, false
		}
		off += 4
	}
	rrs := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	for range rrs {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return 0, 0, false
		}
		typ := binary.BigEndian.Uint16(b[off:])
		rdata = off + 10
		end = rdata + int(binary.BigEndian.Uint16(b[off+8:]))
		if end > len(b) {
			return 0, 0, false
		}
		if typ == 41 {
			return rdata, end, true
		}
		off = end
	}
	return 0, 0, false
}

// hasOption reports whether the EDNS(0) options in rdata hold code.
func hasOption(rdata []byte, code uint16) bool {
	for len(rdata) >= 4 {
		n := 4 + int(binary.BigEndian.Uint16(rdata[2:]))
		if binary.BigEndian.Uint16(rdata) == code {
			return true
		}
		if n > len(rdata) {
			return false
		}
		rdata = rdata[n:]
	}
	return false
}

// hasKeepalive reports whether the message b carries an EDNS
// tcp-keepalive option.
func hasKeepalive(b []byte) bool {
	rdata, end, ok := optRR(b)
	return ok && hasOption(b[rdata:end], optTCPKeepalive)
}

// padDoQ appends to dst the message b padded to a multiple of doqPadBlock
// bytes with an EDNS(0) padding option (RFC 7830, RFC 8467 block
// padding), and returns dst. b is appended as it is when it has no OPT
// record, when its OPT record is not its last record (a TSIG follows), when
// it is padded already, or when padding would pass MaxSize.
func padDoQ(dst, b []byte) []byte {
	rdata, end, ok := optRR(b)
	dst = append(dst, b...)
	if !ok || end != len(b) || hasOption(b[rdata:end], optPadding) {
		return dst
	}
	n := (doqPadBlock - (len(b)+4)%doqPadBlock) % doqPadBlock
	rdlen := end - rdata + 4 + n
	if len(b)+4+n > MaxSize || rdlen > 0xffff {
		return dst
	}
	m := dst[len(dst)-len(b):]
	binary.BigEndian.PutUint16(m[rdata-2:], uint16(rdlen))
	dst = binary.BigEndian.AppendUint16(dst, optPadding)
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	return append(dst, make([]byte, n)...)
}

// doqCheckQuery applies RFC 9250's rules to a query read from a stream:
// a DNS request (checkRequest), message ID 0 (4.2.1), no edns-tcp-keepalive
// option (5.5.2). Every failure is a protocol error.
func doqCheckQuery(msg []byte) error {
	if err := checkRequest(msg); err != nil {
		return err
	}
	if ID(msg) != 0 {
		return errDoQID
	}
	if hasKeepalive(msg) {
		return errDoQKeepalive
	}
	return nil
}

var (
	errDoQID        = errors.New("dnsmsg: DoQ message ID not 0")
	errDoQKeepalive = errors.New("dnsmsg: DoQ query with edns-tcp-keepalive")
)

// isDoQProtocolError tells the framing and query errors that end the
// connection with DOQ_PROTOCOL_ERROR from the errors of the stream.
func isDoQProtocolError(err error) bool {
	switch err {
	case errDoQEarlyFIN, errDoQTrailing, errDoQZeroLength, errDoQID, errDoQKeepalive, nm.ErrBadMessage:
		return true
	}
	return false
}
