package dnsmsg

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DNS over HTTPS (RFC 8484) on the wire: paths, the GET query string, the
// answer's smallest TTL for Cache-Control, and client URIs.

// DefaultPath is the DoH endpoint path served when none is given.
const DefaultPath = "/dns-query"

// ContentType is the media type of DNS messages over HTTPS.
const ContentType = "application/dns-message"

// Errors of the DoH helpers. The server answers them with 400 Bad Request
// (ErrBadQuery) or 413 Content Too Large (nm.ErrTooLarge).
var (
	ErrBadPath  = errors.New("dnsmsg: bad DoH path")
	ErrBadQuery = errors.New("dnsmsg: bad DoH query")
	ErrBadURI   = errors.New("dnsmsg: bad DoH URI")
)

// ValidPath reports whether p can be a DoH endpoint path: absolute, with
// only the characters RFC 3986 allows in a path (percent-escapes
// included), and no query or fragment.
func ValidPath(p string) error {
	if len(p) == 0 || p[0] != '/' {
		return ErrBadPath
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return ErrBadPath
			}
			i += 2
		case !isPathChar(c):
			return ErrBadPath
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isPathChar reports whether c may stand unescaped in a path: unreserved,
// sub-delims, ':', '@' and '/'.
func isPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

// queryParam returns the value of the dns parameter of a raw (still
// escaped) query string. A missing, empty or repeated parameter is
// ErrBadQuery. Other parameters are ignored.
func queryParam(rawQuery string) (string, error) {
	var val string
	found := false
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "dns" {
			continue
		}
		if found {
			return "", ErrBadQuery
		}
		found, val = true, v
	}
	if val == "" {
		return "", ErrBadQuery
	}
	if strings.IndexByte(val, '%') >= 0 {
		// A client escaped what needs no escaping (padding, say).
		u, err := url.QueryUnescape(val)
		if err != nil {
			return "", ErrBadQuery
		}
		val = u
	}
	return val, nil
}

// decodedLen returns the length of the message that the base64url text s
// (with or without padding) decodes to.
func decodedLen(s string) int {
	return base64.RawURLEncoding.DecodedLen(len(strings.TrimRight(s, "=")))
}

// decodeQuery decodes base64url text s into dst, which must hold
// decodedLen(s) bytes, and returns the message. RFC 8484 asks for no
// padding; padding is forgiven.
func decodeQuery(dst []byte, s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "\r\n") { // which package base64 would skip
		return nil, ErrBadQuery
	}
	n, err := base64.RawURLEncoding.Decode(dst, unsafeBytes(s))
	if err != nil || n == 0 {
		return nil, ErrBadQuery
	}
	return dst[:n], nil
}

// minTTL returns the smallest TTL of the answer section of the wire
// message b, and false when the answer is empty or cannot be read.
func minTTL(b []byte) (uint32, bool) {
	if len(b) < HeaderLen {
		return 0, false
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	an := int(binary.BigEndian.Uint16(b[6:]))
	off := HeaderLen
	for i := 0; i < qd; i++ {
		if off = skipName(b, off); off < 0 || off+4 > len(b) {
			return 0, false
		}
		off += 4
	}
	ttl, found := uint32(0), false
	for i := 0; i < an; i++ {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return 0, false
		}
		t := binary.BigEndian.Uint32(b[off+4:])
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10 + rdlen
		if off > len(b) {
			return 0, false
		}
		if t > 0x7fffffff { // RFC 2181 8: treat as zero
			t = 0
		}
		if !found || t < ttl {
			ttl, found = t, true
		}
	}
	return ttl, found
}

// skipName returns the offset after the domain name at off, or -1.
func skipName(b []byte, off int) int {
	for {
		if off >= len(b) {
			return -1
		}
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1
		case l&0xc0 == 0xc0: // a compression pointer ends the name
			if off+2 > len(b) {
				return -1
			}
			return off + 2
		case l&0xc0 != 0:
			return -1
		}
		off += 1 + l
	}
}

// cacheHeader returns the Cache-Control value of a reply: max-age from the
// answer's smallest TTL, or no-cache when there is no answer; as a header
// value list, shared (not to be modified) for common TTLs.
func cacheHeader(reply []byte) []string {
	ttl, ok := minTTL(reply)
	switch {
	case !ok:
		return noCache
	case int(ttl) < len(maxAges):
		return maxAges[ttl]
	}
	return []string{"max-age=" + strconv.FormatUint(uint64(ttl), 10)}
}

var noCache = []string{"no-cache"}

// maxAges holds the Cache-Control values of TTLs up to an hour, made once.
var maxAges = func() [][]string {
	s := make([][]string, 3601)
	for i := range s {
		s[i] = []string{"max-age=" + strconv.Itoa(i)}
	}
	return s
}()

// ParseURI checks a DoH server URI ("https://host[:port]/path", or
// "http://" for cleartext HTTP/2) and returns it with its path defaulted to
// DefaultPath, and the address to dial (port 443, or 80). An IPv6 literal
// must be in brackets.
func ParseURI(uri string) (*url.URL, string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", errors.Join(ErrBadURI, err)
	}
	port := ""
	switch u.Scheme {
	case "https":
		port = "443"
	case "http":
		port = "80"
	default:
		return nil, "", errors.Join(ErrBadURI, errors.New("scheme must be https or http"))
	}
	host := u.Hostname()
	if host == "" {
		return nil, "", errors.Join(ErrBadURI, errors.New("no host"))
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(u.Host, "[") {
		return nil, "", errors.Join(ErrBadURI, errors.New("an IPv6 address must be in brackets"))
	}
	if u.User != nil || u.Fragment != "" {
		return nil, "", errors.Join(ErrBadURI, errors.New("no user or fragment allowed"))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, "", errors.Join(ErrBadURI, errors.New("bad port"))
		}
		port = p
	}
	if u.Path == "" {
		u.Path = DefaultPath
	}
	if err := ValidPath(u.EscapedPath()); err != nil {
		return nil, "", errors.Join(ErrBadURI, err)
	}
	return u, net.JoinHostPort(host, port), nil
}

// getURI returns the URI of a GET request for the wire query q at u:
// u's query string, if any, then the dns parameter.
func getURI(u *url.URL, q []byte) string {
	var sb strings.Builder
	base := u.Scheme + "://" + u.Host + u.EscapedPath()
	sb.Grow(len(base) + len(u.RawQuery) + 6 + base64.RawURLEncoding.EncodedLen(len(q)))
	sb.WriteString(base)
	sb.WriteByte('?')
	if u.RawQuery != "" {
		sb.WriteString(u.RawQuery)
		sb.WriteByte('&')
	}
	sb.WriteString("dns=")
	enc := base64.NewEncoder(base64.RawURLEncoding, &sb)
	enc.Write(q)
	enc.Close()
	return sb.String()
}
