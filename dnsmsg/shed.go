package dnsmsg

import (
	"encoding/binary"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
)

// Response codes a stream listener sheds requests with (ServerConfig.Shed).
const (
	RcodeServFail = 2
	RcodeRefused  = 5
)

// logShed logs a request shed because the consumers fell behind (Warn;
// the manager's logger limits its rate).
func logShed(m *core.Manager, t core.Transport, peer any) {
	m.Logger().Warn("dnsmsg: request shed: consumers fell behind", "transport", t.String(), "peer", peer)
}

// logBodyCap logs a DoH request refused (413) because the request body
// bytes buffered passed the connection's or the listener's cap.
func logBodyCap(m *core.Manager, peer any) {
	m.Logger().Warn("dnsmsg: DoH request refused: buffered body bytes at the cap", "peer", peer)
}

// logDrain logs the beginning of a listener's drain, with open
// conversations, and returns the function that logs its end with the
// error Shutdown returns.
func logDrain(m *core.Manager, t core.Transport, addr any, open int) func(error) {
	m.Logger().Info("dnsmsg: listener drain begins", "transport", t.String(), "addr", addr, "connections", open)
	start := time.Now()
	return func(err error) {
		m.Logger().Info("dnsmsg: listener drain ended", core.DrainEnded(start, err, "transport", t.String(), "addr", addr)...)
	}
}

// maxRefusal is the longest refusal: a header and one question with the
// longest name.
const maxRefusal = HeaderLen + 255 + 4

// appendRefusal appends to b the answer with rcode to the request req
// (which checkRequest accepted): its header, as a response with no
// records, and its question if it has exactly one that parses; else no
// question.
func appendRefusal(b, req []byte, rcode int) []byte {
	end := HeaderLen
	if binary.BigEndian.Uint16(req[4:]) == 1 {
		end = questionEnd(req)
	}
	start := len(b)
	b = append(b, req[:end]...)
	h := b[start:]
	h[2] = h[2]&0x79 | 0x80             // QR; opcode and RD kept, AA and TC cleared
	h[3] = h[3]&0x10 | byte(rcode&0x0f) // CD kept; RA, AD cleared
	qd := uint16(0)
	if end > HeaderLen {
		qd = 1
	}
	binary.BigEndian.PutUint16(h[4:], qd)
	clear(h[6:HeaderLen])
	return b
}

// questionEnd returns where req's first question ends, or HeaderLen if
// it does not parse.
func questionEnd(req []byte) int {
	i := HeaderLen
	for i < len(req) && i < HeaderLen+255 {
		n := int(req[i])
		switch {
		case n == 0:
			i++
			if i+4 > len(req) {
				return HeaderLen
			}
			return i + 4
		case n&0xc0 != 0:
			return HeaderLen // no compression in the first name
		}
		i += 1 + n
	}
	return HeaderLen
}

// firstQuestion returns the wire bytes of req's first question, or nil if
// it has none or it does not parse (compression is not followed).
func firstQuestion(req []byte) []byte {
	if len(req) < HeaderLen || binary.BigEndian.Uint16(req[4:]) == 0 {
		return nil
	}
	end := questionEnd(req)
	if end == HeaderLen {
		return nil
	}
	return req[HeaderLen:end]
}
