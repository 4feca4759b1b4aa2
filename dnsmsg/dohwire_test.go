package dnsmsg

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"testing"

	"github.com/miekg/dns"
)

func TestValidPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/dns-query", true},
		{"/", true},
		{"/a/b/c", true},
		{"/resolve;v=1", true},
		{"/~user/dns@x:1", true},
		{"/%2Fescaped", true},
		{"", false},
		{"dns-query", false},
		{"/dns query", false},
		{"/dns-query?dns=x", false},
		{"/dns-query#frag", false},
		{"/bad%zz", false},
		{"/short%2", false},
		{"/tab\t", false},
		{"/\x00", false},
		{"/ünï", false},
	} {
		if err := ValidPath(tc.path); (err == nil) != tc.ok {
			t.Errorf("ValidPath(%q) = %v; want ok %v", tc.path, err, tc.ok)
		}
	}
}

func TestQueryParam(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
		ok        bool
	}{
		{"dns=AAAB", "AAAB", true},
		{"ct&dns=AAAB", "AAAB", true},
		{"a=1&dns=AAAB&b=2", "AAAB", true},
		{"dns=AAAB%3D%3D", "AAAB==", true},
		{"xdns=AAAB", "", false},
		{"dnsx=AAAB", "", false},
		{"dns", "", false},
		{"dns=", "", false},
		{"", "", false},
		{"dns=AAAB&dns=AAAC", "", false},
		{"dns=%zz", "", false},
	} {
		got, err := queryParam(tc.raw)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("queryParam(%q) = %q, %v; want %q, ok %v", tc.raw, got, err, tc.want, tc.ok)
		}
	}
}

func TestDecodeQuery(t *testing.T) {
	raw := []byte{0xfb, 0xff, 0x00, 0x01, 0x3e}
	for _, tc := range []struct {
		in   string
		want []byte
	}{
		{base64.RawURLEncoding.EncodeToString(raw), raw},
		{base64.URLEncoding.EncodeToString(raw), raw}, // padding forgiven
		{base64.RawURLEncoding.EncodeToString(raw[:1]), raw[:1]},
		{base64.URLEncoding.EncodeToString(raw[:1]), raw[:1]},
		{base64.StdEncoding.EncodeToString(raw), nil}, // + and / are not base64url
		{"A", nil},
		{"AB!C", nil},
		{"AB C", nil},
		{"AAAB\nAAAB", nil},
		{"\r", nil},
		{"==", nil},
	} {
		dst := make([]byte, decodedLen(tc.in))
		got, err := decodeQuery(dst, tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("decodeQuery(%q) = %x; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("decodeQuery(%q) = %x, %v; want %x", tc.in, got, err, tc.want)
		}
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri, addr, path string
		ok              bool
	}{
		{"https://dns.example/dns-query", "dns.example:443", "/dns-query", true},
		{"https://dns.example", "dns.example:443", DefaultPath, true},
		{"https://127.0.0.1:8443/q", "127.0.0.1:8443", "/q", true},
		{"https://[::1]:8443/dns-query", "[::1]:8443", "/dns-query", true},
		{"https://[::1]/dns-query", "[::1]:443", "/dns-query", true},
		{"http://127.0.0.1/dns-query", "127.0.0.1:80", "/dns-query", true},
		{"https://::1/dns-query", "", "", false},
		{"https://::1:8443/dns-query", "", "", false},
		{"https://fe80::1/dns-query", "", "", false},
		{"ftp://dns.example/dns-query", "", "", false},
		{"dns.example/dns-query", "", "", false},
		{"https:///dns-query", "", "", false},
		{"https://dns.example:0/", "", "", false},
		{"https://dns.example:99999/", "", "", false},
		{"https://user@dns.example/", "", "", false},
		{"https://dns.example/q#frag", "", "", false},
	} {
		u, addr, err := ParseURI(tc.uri)
		if (err == nil) != tc.ok {
			t.Errorf("ParseURI(%q) error %v; want ok %v", tc.uri, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadURI) {
				t.Errorf("ParseURI(%q) error %v; want ErrBadURI", tc.uri, err)
			}
			continue
		}
		if addr != tc.addr || u.Path != tc.path {
			t.Errorf("ParseURI(%q) = %q, %q; want %q, %q", tc.uri, addr, u.Path, tc.addr, tc.path)
		}
	}
}

func TestGetURI(t *testing.T) {
	q := []byte{0xfb, 0xff, 0x00}
	for _, tc := range []struct{ base, want string }{
		{"https://dns.example/dns-query", "https://dns.example/dns-query?dns=-_8A"},
		{"https://dns.example:8443/q?ct=1", "https://dns.example:8443/q?ct=1&dns=-_8A"},
		{"https://[::1]/a%2Fb", "https://[::1]/a%2Fb?dns=-_8A"},
	} {
		u, _, err := ParseURI(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		got := getURI(u, q)
		if got != tc.want {
			t.Errorf("getURI(%q) = %q; want %q", tc.base, got, tc.want)
		}
		// And back: the server finds the query in it.
		pu, _ := url.Parse(got)
		v, err := queryParam(pu.RawQuery)
		if err != nil {
			t.Fatal(err)
		}
		dq, err := decodeQuery(make([]byte, decodedLen(v)), v)
		if err != nil || !bytes.Equal(dq, q) {
			t.Errorf("round trip of %q = %x, %v; want %x", got, dq, err, q)
		}
	}
}

func TestMinTTLAndCacheControl(t *testing.T) {
	msg := func(answers ...string) []byte {
		m := new(dns.Msg)
		m.SetQuestion("ttl.example.", dns.TypeA)
		m.Response = true
		for _, a := range answers {
			rr, err := dns.NewRR(a)
			if err != nil {
				t.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}})
		m.Compress = true
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"no answer", msg(), "no-cache"},
		{"one", msg("ttl.example. 300 IN A 192.0.2.1"), "max-age=300"},
		{"smallest of three", msg("ttl.example. 300 IN A 192.0.2.1", "ttl.example. 20 IN A 192.0.2.2", "ttl.example. 7200 IN A 192.0.2.3"), "max-age=20"},
		{"zero", msg("ttl.example. 0 IN TXT \"x\""), "max-age=0"},
		{"large", msg("ttl.example. 604800 IN A 192.0.2.1"), "max-age=604800"},
		{"over 2^31 is zero", msg("ttl.example. 4294967295 IN A 192.0.2.1"), "max-age=0"},
		{"header only", make([]byte, 12), "no-cache"},
		{"short", []byte{1, 2, 3}, "no-cache"},
		{"truncated answer", msg("ttl.example. 300 IN A 192.0.2.1")[:40], "no-cache"},
	} {
		if got := cacheHeader(tc.b)[0]; got != tc.want {
			t.Errorf("%s: Cache-Control %q; want %q", tc.name, got, tc.want)
		}
	}
}

// FuzzDoHGet fuzzes the GET query path: the query string parser and the
// base64url decoder, with a round trip for what they accept.
func FuzzDoHGet(f *testing.F) {
	f.Add("dns=AAABAAABAAAAAAAAB2V4YW1wbGUDY29tAAABAAE")
	f.Add("ct&dns=AAAB%3D%3D&x=1")
	f.Add("dns=-_8A&dns=")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := queryParam(raw)
		if err != nil {
			return
		}
		n := decodedLen(v)
		if n < 0 || n > len(v) {
			t.Fatalf("decodedLen(%q) = %d", v, n)
		}
		msg, err := decodeQuery(make([]byte, n), v)
		if err != nil {
			return
		}
		u, _, _ := ParseURI("https://dns.example/dns-query")
		back, _ := url.Parse(getURI(u, msg))
		v2, err := queryParam(back.RawQuery)
		if err != nil {
			t.Fatal(err)
		}
		msg2, err := decodeQuery(make([]byte, decodedLen(v2)), v2)
		if err != nil || !bytes.Equal(msg, msg2) {
			t.Fatalf("round trip of %x: %x, %v", msg, msg2, err)
		}
	})
}

// FuzzMinTTL: any reply bytes give a Cache-Control value, never a panic.
func FuzzMinTTL(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("ttl.example.", dns.TypeA)
	rr, _ := dns.NewRR("ttl.example. 300 IN A 192.0.2.1")
	m.Answer = append(m.Answer, rr)
	b, _ := m.Pack()
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if cacheHeader(b)[0] == "" {
			t.Fatal("empty Cache-Control")
		}
	})
}
