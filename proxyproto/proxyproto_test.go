package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustAppend(t testing.TB, h Header) []byte {
	t.Helper()
	b, err := h.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	v4 = Header{Command: Proxy, Transport: Stream,
		Source:      netip.MustParseAddrPort("192.0.2.7:40000"),
		Destination: netip.MustParseAddrPort("198.51.100.1:53")}
	v6 = Header{Command: Proxy, Transport: Datagram,
		Source:      netip.MustParseAddrPort("[2001:db8::7]:40000"),
		Destination: netip.MustParseAddrPort("[2001:db8::1]:853"),
		TLVs:        []TLV{{Type: 0x01, Value: []byte("h2")}, {Type: 0xe0, Value: []byte{}}}}
)

// raw builds a header by hand: version/command byte, family/transport
// byte, and body.
func raw(vc, ft byte, body []byte) []byte {
	b := append([]byte(Signature), vc, ft)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestRoundTrip(t *testing.T) {
	for _, h := range []Header{v4, v6, LocalHeader} {
		b := mustAppend(t, h)
		got, n, err := Parse(append(b, "payload"...))
		if err != nil || n != len(b) {
			t.Fatalf("Parse(%v) = %d, %v; want %d", h, n, err, len(b))
		}
		wantFam := map[bool]Family{true: INET, false: INET6}[h.Source.Addr().Is4()]
		if h.Command == Proxy && got.Family != wantFam {
			t.Errorf("family %d for %v; want %d", got.Family, h, wantFam)
		}
		if !reflect.DeepEqual(stripFamily(got), stripFamily(h)) {
			t.Errorf("Parse(Append(%+v)) = %+v", h, got)
		}
	}
}

// stripFamily normalizes what Append fills in (family, a default
// transport) and an empty TLV list, for comparing.
func stripFamily(h Header) Header {
	h.Family = 0
	if h.Transport == UnspecTransport && h.Command == Proxy {
		h.Transport = Stream
	}
	if len(h.TLVs) == 0 {
		h.TLVs = nil
	}
	return h
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"proxy v4", mustAppend(t, v4), true},
		{"proxy v6", mustAppend(t, v6), true},
		{"local", mustAppend(t, LocalHeader), false},
		{"local with v4 block", raw(0x20, 0x11, make([]byte, 12)), false},
		{"proxy unspec", raw(0x21, 0x00, nil), false},
		{"proxy unix", raw(0x21, 0x31, make([]byte, 216)), false},
	} {
		h, _, err := Parse(tc.b)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		src, dst, ok := h.Addresses()
		if ok != tc.ok {
			t.Errorf("%s: Addresses ok %v; want %v", tc.name, ok, tc.ok)
		}
		if ok && (src != h.Source || dst != h.Destination) {
			t.Errorf("%s: Addresses %v %v", tc.name, src, dst)
		}
	}
}

func TestBadHeaders(t *testing.T) {
	good := mustAppend(t, v4)
	with := func(i int, v byte) []byte {
		b := bytes.Clone(good)
		b[i] = v
		return b
	}
	zeroSrc := v4
	zeroSrc.Source = netip.MustParseAddrPort("0.0.0.0:1")
	zeroDst := v4
	zeroDst.Destination = netip.MustParseAddrPort("[::]:53")
	zeroDst.Source = netip.MustParseAddrPort("[2001:db8::1]:1")
	port0 := v4
	port0.Destination = netip.MustParseAddrPort("198.51.100.1:0")
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"bad signature", with(3, 'x'), ErrBadSignature},
		{"v1 text", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"), ErrBadSignature},
		{"version 1", with(12, 0x11), ErrBadVersion},
		{"version 3", with(12, 0x31), ErrBadVersion},
		{"command 2", with(12, 0x22), ErrBadCommand},
		{"family 4", with(13, 0x41), ErrBadFamily},
		{"transport 3", with(13, 0x13), ErrBadFamily},
		{"v4 too short", raw(0x21, 0x11, make([]byte, 11)), ErrTooShort},
		{"v6 too short", raw(0x21, 0x21, make([]byte, 35)), ErrTooShort},
		{"unix too short", raw(0x21, 0x31, make([]byte, 100)), ErrTooShort},
		{"zero source", mustAppend(t, zeroSrc), ErrBadAddress},
		{"zero destination", mustAppend(t, zeroDst), ErrBadAddress},
		{"destination port 0", mustAppend(t, port0), ErrBadAddress},
		{"truncated TLV", append(raw(0x21, 0x11, append(good[16:28:28], 0x01, 0x00)), 0), ErrBadTLV},
		{"TLV longer than header", raw(0x21, 0x11, append(good[16:28:28], 0x01, 0x00, 0x09, 'x')), ErrBadTLV},
		{"datagram cut in prefix", good[:10], ErrIncomplete},
		{"datagram cut in addresses", good[:20], ErrIncomplete},
	} {
		_, _, err := Parse(tc.b)
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse = %v; want %v", tc.name, err, tc.want)
		}
		if tc.want == ErrIncomplete {
			continue
		}
		// The stream parser agrees.
		p := NewParser(0)
		if _, _, err := p.Write(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Parser.Write = %v; want %v", tc.name, err, tc.want)
		}
	}
}

// TestParserSplits feeds headers byte by byte and in random splits, with
// the stream's data after them: the parser stops exactly at the header's
// end.
func TestParserSplits(t *testing.T) {
	for _, h := range []Header{v4, v6, LocalHeader} {
		hdr := mustAppend(t, h)
		stream := append(bytes.Clone(hdr), "after the header"...)
		for trial := 0; trial < 200; trial++ {
			p := NewParser(0)
			off := 0
			for {
				k := 1
				if trial > 0 {
					k = 1 + rand.IntN(len(stream)-off)
				}
				n, done, err := p.Write(stream[off : off+k])
				if err != nil {
					t.Fatalf("trial %d at %d: %v", trial, off, err)
				}
				off += n
				if done {
					break
				}
				if n != k {
					t.Fatalf("trial %d: took %d of %d bytes without finishing", trial, n, k)
				}
			}
			if off != len(hdr) {
				t.Fatalf("trial %d: consumed %d bytes; want %d", trial, off, len(hdr))
			}
			if got := p.Header(); got.Source != h.Source || got.Command != h.Command || len(got.TLVs) != len(h.TLVs) {
				t.Fatalf("trial %d: %+v; want %+v", trial, got, h)
			}
		}
	}
}

// TestBadStreamFailsEarly: a stream that is not PROXY fails at its first
// wrong byte, without waiting for 16.
func TestBadStreamFailsEarly(t *testing.T) {
	p := NewParser(0)
	if _, _, err := p.Write([]byte{'\r', '\n', 'x'}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Write = %v; want ErrBadSignature", err)
	}
	p = NewParser(0)
	if _, _, err := p.Write([]byte("\x16\x03\x01")); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a TLS hello: %v; want ErrBadSignature", err)
	}
}

func TestMaxSize(t *testing.T) {
	big := v4
	big.TLVs = []TLV{{Type: 0xe0, Value: make([]byte, MaxStreamLen-PrefixLen-12-3)}}
	b := mustAppend(t, big)
	if len(b) != MaxStreamLen {
		t.Fatalf("header of %d bytes; want %d", len(b), MaxStreamLen)
	}
	if _, err := ReadHeader(bytes.NewReader(b), 0); err != nil {
		t.Errorf("a header of MaxStreamLen: %v", err)
	}
	big.TLVs[0].Value = append(big.TLVs[0].Value, 0)
	b = mustAppend(t, big)
	if _, err := ReadHeader(bytes.NewReader(b), 0); !errors.Is(err, ErrTooLong) {
		t.Errorf("a header one byte over: %v; want ErrTooLong", err)
	}
	if _, _, err := Parse(b); err != nil {
		t.Errorf("Parse takes any length in a datagram: %v", err)
	}
	big.TLVs[0].Value = make([]byte, 0x10000)
	if _, err := big.Append(nil); !errors.Is(err, ErrTooLong) {
		t.Errorf("Append of a header over 64 KiB: %v; want ErrTooLong", err)
	}
}

func TestReadHeaderReadsNoFurther(t *testing.T) {
	r := bytes.NewReader(append(mustAppend(t, v6), "rest"...))
	h, err := ReadHeader(oneByte{r}, 0)
	if err != nil || h.Source != v6.Source {
		t.Fatalf("ReadHeader = %+v, %v", h, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "rest" {
		t.Errorf("left %q; want %q", rest, "rest")
	}
	if _, err := ReadHeader(bytes.NewReader(mustAppend(t, v4)[:20]), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut header: %v; want ErrUnexpectedEOF", err)
	}
}

// oneByte reads one byte at a time.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(b []byte) (int, error) { return o.r.Read(b[:min(1, len(b))]) }

func TestAppendErrors(t *testing.T) {
	mixed := v4
	mixed.Destination = netip.MustParseAddrPort("[2001:db8::1]:53")
	if _, err := mixed.Append(nil); !errors.Is(err, ErrBadFamily) {
		t.Errorf("mixed families: %v", err)
	}
	if _, err := (Header{Command: 7}).Append(nil); !errors.Is(err, ErrBadCommand) {
		t.Errorf("command 7: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	var any Policy
	if !any.Allowed(netip.MustParseAddr("203.0.113.9")) {
		t.Error("the zero Policy refused a peer")
	}
	p := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	for addr, want := range map[string]bool{"127.0.0.2": true, "::1": true, "::ffff:127.0.0.1": true, "192.0.2.1": false, "::2": false} {
		if got := p.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allowed(%s) = %v; want %v", addr, got, want)
		}
	}
}

// FuzzParse: whatever Parse accepts, Append writes back to bytes that
// parse to the same header, and the stream parser agrees with Parse.
func FuzzParse(f *testing.F) {
	for _, h := range []Header{v4, v6, LocalHeader} {
		b, _ := h.Append(nil)
		f.Add(b)
	}
	f.Add(raw(0x21, 0x31, make([]byte, 216)))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		p := NewParser(MaxLen)
		pn, done, perr := p.Write(b)
		if err == nil {
			if perr != nil || !done || pn != n {
				t.Fatalf("Parse took %d bytes; Parser %d, %v, %v", n, pn, done, perr)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v is not ErrInvalid", err)
		}
		if err != nil || h.Family == Unix || h.Command == Local {
			return
		}
		if h.Family == Unspec {
			return
		}
		b2, err := h.Append(nil)
		if err != nil {
			t.Fatalf("Append(%+v): %v", h, err)
		}
		h2, _, err := Parse(b2)
		if err != nil || !reflect.DeepEqual(stripFamily(h), stripFamily(h2)) {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, h)
		}
	})
}
