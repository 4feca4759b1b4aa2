// Package proxyproto reads and writes the binary header of the PROXY
// protocol, version 2: what a load balancer (dnsdist, HAProxy, a cloud
// balancer) puts in front of a connection or a datagram to tell the server
// the client's real address.
//
// A header is 16 bytes (signature, version and command, family and
// transport, length) followed by the addresses and optional TLVs. Parse
// reads one from a datagram, Parser reads one incrementally from a stream,
// ReadHeader from a reader without reading past it, and Header.Append
// builds one.
//
// The rules a server keeps (those of BIND's netmgr): a LOCAL header, or a
// PROXY header with family AF_UNSPEC or AF_UNIX, is valid but carries no
// address to use (Header.Addresses reports false): the connection's own
// addresses stand. An all-zero source or destination address, or a
// destination port of 0, makes the header invalid (ErrBadAddress).
package proxyproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
)

// Signature starts every version 2 header.
const Signature = "\r\n\r\n\x00\r\nQUIT\n"

// Sizes of a header.
const (
	// PrefixLen is the fixed part: signature, version and command, family
	// and transport, length.
	PrefixLen = 16
	// MaxStreamLen is the largest header accepted on a stream by default
	// (as BIND does).
	MaxStreamLen = 1220
	// MaxLen is the largest header the format can express.
	MaxLen = PrefixLen + 0xffff
)

// Command says whether a header carries a proxied connection.
type Command uint8

const (
	Local Command = 0x0 // the proxy's own connection (health checks): no addresses to use
	Proxy Command = 0x1 // a relayed connection
)

// Family is the address family of a header.
type Family uint8

const (
	Unspec Family = 0x0
	INET   Family = 0x1
	INET6  Family = 0x2
	Unix   Family = 0x3
)

// Transport is the transport protocol of the relayed connection.
type Transport uint8

const (
	UnspecTransport Transport = 0x0
	Stream          Transport = 0x1
	Datagram        Transport = 0x2
)

// Address block lengths by family.
var addrLen = [4]int{Unspec: 0, INET: 12, INET6: 36, Unix: 216}

// Errors of a bad header. Each matches ErrInvalid with errors.Is.
var (
	ErrInvalid      = errors.New("proxyproto: invalid header")
	ErrBadSignature = fmt.Errorf("%w: bad signature", ErrInvalid)
	ErrBadVersion   = fmt.Errorf("%w: version is not 2", ErrInvalid)
	ErrBadCommand   = fmt.Errorf("%w: bad command", ErrInvalid)
	ErrBadFamily    = fmt.Errorf("%w: bad address family or transport", ErrInvalid)
	ErrTooShort     = fmt.Errorf("%w: length too short for its addresses", ErrInvalid)
	ErrTooLong      = fmt.Errorf("%w: longer than allowed", ErrInvalid)
	ErrBadAddress   = fmt.Errorf("%w: zero address or destination port", ErrInvalid)
	ErrBadTLV       = fmt.Errorf("%w: malformed TLV", ErrInvalid)
	// ErrIncomplete reports a datagram that ends inside its header.
	ErrIncomplete = fmt.Errorf("%w: incomplete", ErrInvalid)
)

// TLV is a type-length-value extension of a header, passed through as it
// came.
type TLV struct {
	Type  byte
	Value []byte
}

// Header is a parsed (or to be built) version 2 header.
type Header struct {
	Command   Command
	Family    Family
	Transport Transport
	// Source and Destination are the relayed connection's addresses, for
	// families INET and INET6.
	Source, Destination netip.AddrPort
	// TLVs are the extensions after the addresses (for AF_UNIX, the
	// addresses themselves are not kept).
	TLVs []TLV
}

// LocalHeader is the header of a LOCAL command: the proxy speaking for
// itself.
var LocalHeader = Header{Command: Local}

// Addresses returns the source and destination the server should use, and
// false when the header carries none to use (LOCAL, AF_UNSPEC, AF_UNIX).
func (h *Header) Addresses() (src, dst netip.AddrPort, ok bool) {
	if h.Command != Proxy || (h.Family != INET && h.Family != INET6) {
		return netip.AddrPort{}, netip.AddrPort{}, false
	}
	return h.Source, h.Destination, true
}

// Parse reads the header at the start of b (a datagram) and returns it
// with its length: the payload is b[n:].
func Parse(b []byte) (h Header, n int, err error) {
	if len(b) < PrefixLen {
		if err := checkPrefix(b); err != nil {
			return Header{}, 0, err
		}
		return Header{}, 0, ErrIncomplete
	}
	total, err := prefix(b[:PrefixLen], MaxLen)
	if err != nil {
		return Header{}, 0, err
	}
	if len(b) < total {
		return Header{}, 0, ErrIncomplete
	}
	h, err = parseBody(b[:total])
	return h, total, err
}

// checkPrefix checks the bytes of a prefix read so far, so that a stream
// that is not PROXY fails at its first wrong byte.
func checkPrefix(b []byte) error {
	n := min(len(b), len(Signature))
	if string(b[:n]) != Signature[:n] {
		return ErrBadSignature
	}
	if len(b) > 12 {
		if b[12]>>4 != 2 {
			return ErrBadVersion
		}
		if c := b[12] & 0xf; c != byte(Local) && c != byte(Proxy) {
			return ErrBadCommand
		}
	}
	if len(b) > 13 {
		if f, t := b[13]>>4, b[13]&0xf; f > byte(Unix) || t > byte(Datagram) {
			return ErrBadFamily
		}
	}
	return nil
}

// prefix checks the 16-byte prefix p and returns the header's total
// length, which must not exceed max.
func prefix(p []byte, max int) (int, error) {
	if err := checkPrefix(p); err != nil {
		return 0, err
	}
	total := PrefixLen + int(binary.BigEndian.Uint16(p[14:]))
	if total > max {
		return 0, ErrTooLong
	}
	if total-PrefixLen < addrLen[p[13]>>4] && Command(p[12]&0xf) == Proxy {
		return 0, ErrTooShort
	}
	return total, nil
}

// parseBody parses a whole header b whose prefix was checked.
func parseBody(b []byte) (Header, error) {
	h := Header{Command: Command(b[12] & 0xf), Family: Family(b[13] >> 4), Transport: Transport(b[13] & 0xf)}
	rest := b[PrefixLen:]
	if h.Command == Local {
		// The receiver ignores the protocol block of LOCAL; TLVs are
		// still read when the block is what an empty family leaves.
		if h.Family != Unspec {
			return h, nil
		}
	}
	if len(rest) < addrLen[h.Family] {
		return Header{}, ErrTooShort
	}
	switch h.Family {
	case INET:
		src := netip.AddrFrom4([4]byte(rest[0:4]))
		dst := netip.AddrFrom4([4]byte(rest[4:8]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(rest[8:]))
		h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(rest[10:]))
	case INET6:
		src := netip.AddrFrom16([16]byte(rest[0:16]))
		dst := netip.AddrFrom16([16]byte(rest[16:32]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(rest[32:]))
		h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(rest[34:]))
	}
	if h.Command == Proxy && (h.Family == INET || h.Family == INET6) {
		if h.Source.Addr().IsUnspecified() || h.Destination.Addr().IsUnspecified() || h.Destination.Port() == 0 {
			return Header{}, ErrBadAddress
		}
	}
	tlvs, err := parseTLVs(rest[addrLen[h.Family]:])
	if err != nil {
		return Header{}, err
	}
	h.TLVs = tlvs
	return h, nil
}

func parseTLVs(b []byte) ([]TLV, error) {
	var tlvs []TLV
	for len(b) > 0 {
		if len(b) < 3 {
			return nil, ErrBadTLV
		}
		n := int(binary.BigEndian.Uint16(b[1:]))
		if len(b) < 3+n {
			return nil, ErrBadTLV
		}
		tlvs = append(tlvs, TLV{Type: b[0], Value: slices.Clone(b[3 : 3+n])})
		b = b[3+n:]
	}
	return tlvs, nil
}

// Parser reads a header from a stream incrementally: Write takes bytes as
// they come and consumes no byte past the header. The zero value is not
// ready; use NewParser.
type Parser struct {
	max   int
	buf   []byte
	total int // the header's length once the prefix is in; 0 before
	h     Header
	done  bool
}

// NewParser returns a parser accepting headers of at most max bytes
// (MaxStreamLen if max <= 0).
func NewParser(max int) *Parser {
	if max <= 0 {
		max = MaxStreamLen
	}
	return &Parser{max: min(max, MaxLen)}
}

// Write consumes bytes of the header from b and returns how many it took;
// done reports the header complete (Header returns it), and the bytes
// b[n:] are the stream's, after the header. An error is final.
func (p *Parser) Write(b []byte) (n int, done bool, err error) {
	if p.done {
		return 0, true, nil
	}
	for len(b) > n {
		need := PrefixLen
		if p.total > 0 {
			need = p.total
		}
		k := min(need-len(p.buf), len(b)-n)
		p.buf = append(p.buf, b[n:n+k]...)
		n += k
		if p.total == 0 {
			if err := checkPrefix(p.buf); err != nil {
				return n, false, err
			}
			if len(p.buf) < PrefixLen {
				continue
			}
			if p.total, err = prefix(p.buf, p.max); err != nil {
				return n, false, err
			}
		}
		if len(p.buf) == p.total {
			if p.h, err = parseBody(p.buf); err != nil {
				return n, false, err
			}
			p.done = true
			return n, true, nil
		}
	}
	return n, false, nil
}

// Need returns how many more bytes the header needs at least: what a
// reader may read without reading past it.
func (p *Parser) Need() int {
	if p.done {
		return 0
	}
	if p.total == 0 {
		return PrefixLen - len(p.buf)
	}
	return p.total - len(p.buf)
}

// Header returns the header once Write reported it done.
func (p *Parser) Header() Header { return p.h }

// ReadHeader reads one header of at most max bytes (MaxStreamLen if max <=
// 0) from r, never reading past it.
func ReadHeader(r io.Reader, max int) (Header, error) {
	p := NewParser(max)
	var buf [256]byte
	for {
		k := min(p.Need(), len(buf))
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			return Header{}, err
		}
		_, done, err := p.Write(buf[:k])
		if err != nil {
			return Header{}, err
		}
		if done {
			return p.Header(), nil
		}
	}
}

// Append appends the wire form of h to dst. For a PROXY command the family
// follows Source (INET or INET6; Destination must be of the same family);
// Transport defaults to Stream.
func (h Header) Append(dst []byte) ([]byte, error) {
	fam, tr := Unspec, h.Transport
	var addrs []byte
	if h.Command == Proxy {
		sa, da := h.Source.Addr(), h.Destination.Addr()
		switch {
		case sa.Is4() && da.Is4():
			fam = INET
		case sa.Is6() && da.Is6():
			fam = INET6
		default:
			return nil, fmt.Errorf("%w: source %v and destination %v", ErrBadFamily, h.Source, h.Destination)
		}
		addrs = append(append(addrs, sa.AsSlice()...), da.AsSlice()...)
		addrs = binary.BigEndian.AppendUint16(addrs, h.Source.Port())
		addrs = binary.BigEndian.AppendUint16(addrs, h.Destination.Port())
		if tr == UnspecTransport {
			tr = Stream
		}
	} else if h.Command != Local {
		return nil, ErrBadCommand
	}
	body := len(addrs)
	for _, t := range h.TLVs {
		body += 3 + len(t.Value)
	}
	if body > 0xffff {
		return nil, ErrTooLong
	}
	dst = append(dst, Signature...)
	dst = append(dst, 0x20|byte(h.Command), byte(fam)<<4|byte(tr))
	dst = binary.BigEndian.AppendUint16(dst, uint16(body))
	dst = append(dst, addrs...)
	for _, t := range h.TLVs {
		dst = append(dst, t.Type)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(t.Value)))
		dst = append(dst, t.Value...)
	}
	return dst, nil
}

// Policy says which peers may send headers. The zero value allows every
// peer.
type Policy struct {
	// Allow lists the networks of the proxies allowed to send headers; a
	// connection or datagram from elsewhere is refused. Empty: any peer.
	Allow []netip.Prefix
	// MaxLen caps a header on a stream; if zero, MaxStreamLen.
	MaxLen int
}

// Allowed reports whether a peer at a may send headers.
func (p *Policy) Allowed(a netip.Addr) bool {
	if len(p.Allow) == 0 {
		return true
	}
	a = a.Unmap()
	for _, n := range p.Allow {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
