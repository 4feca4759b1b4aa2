package dnsmsg

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/nm"
)

func packed(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckRequest(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("example.com.", dns.TypeA)
	edns := q.Copy()
	edns.SetEdns0(1232, true)
	root := new(dns.Msg)
	root.SetQuestion(".", dns.TypeNS)
	resp := q.Copy()
	resp.Response = true
	lying := packed(t, q)
	lying[5] = 2 // two questions announced, one present... and room for it
	huge := packed(t, q)
	huge[6], huge[7] = 0x12, 0x34 // thousands of answers announced
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"query", packed(t, q), true},
		{"query with EDNS", packed(t, edns), true},
		{"root NS", packed(t, root), true},
		{"empty", nil, false},
		{"one byte", []byte{1}, false},
		{"short header", make([]byte, HeaderLen-1), false},
		{"response", packed(t, resp), false},
		{"counts that cannot fit", huge, false},
		{"header only, no question", make([]byte, HeaderLen), true},
		{"two questions claimed, short", lying[:HeaderLen+2*minQuestion-1], false},
	}
	for _, tt := range tests {
		err := checkRequest(tt.b)
		if (err == nil) != tt.ok {
			t.Errorf("checkRequest(%s) = %v; want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, nm.ErrBadMessage) {
			t.Errorf("checkRequest(%s) = %v; want ErrBadMessage", tt.name, err)
		}
	}
}

func TestCheckRequestRejectsRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	b := make([]byte, 512)
	passed := 0
	for i := 0; i < 10000; i++ {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if checkRequest(b) == nil {
			passed++
		}
	}
	// A random header passes only with counts under ~100 in every section
	// and QR clear: about 1 in 2^35.
	if passed != 0 {
		t.Errorf("%d of 10000 random 512-byte datagrams passed", passed)
	}
}

// FuzzCheckRequest: the UDP request check never panics, and whatever it
// accepts has a header whose sections can fit.
func FuzzCheckRequest(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("fuzz.example.", dns.TypeTXT)
	f.Add(packed(f, q))
	f.Add([]byte{})
	f.Add(make([]byte, HeaderLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkRequest(b) != nil {
			return
		}
		if len(b) < HeaderLen || IsResponse(b) {
			t.Fatalf("accepted %x", b)
		}
		// miekg/dns may still refuse it (bad names), but must not panic.
		Parse(b)
	})
}
