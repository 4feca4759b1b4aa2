package dnsmsg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/miekg/dns"
)

// chunked reads its bytes n at a time, as QUIC frames may carry them.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

// chunks reads b n bytes at a time (at least 1).
func chunks(b []byte, n int) io.Reader { return &chunked{b: b, n: max(n, 1)} }

func TestReadDoQMessage(t *testing.T) {
	msg := bytes.Repeat([]byte{7}, 700)
	framed := append(binary.BigEndian.AppendUint16(nil, 700), msg...)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"whole", framed, nil},
		{"FIN before the length", framed[:1], errDoQEarlyFIN},
		{"FIN before the message", framed[:300], errDoQEarlyFIN},
		{"zero length", []byte{0, 0}, errDoQZeroLength},
		{"two messages", append(bytes.Clone(framed), framed...), errDoQTrailing},
		{"one byte after", append(bytes.Clone(framed), 0), errDoQTrailing},
	}
	for _, tt := range tests {
		got, err := readDoQMessage(chunks(tt.in, 1), nil)
		if err != tt.want {
			t.Errorf("%s: readDoQMessage = %v; want %v", tt.name, err, tt.want)
		}
		if err == nil && !bytes.Equal(got[2:], msg) {
			t.Errorf("%s: message %d bytes; want %d", tt.name, len(got)-2, len(msg))
		}
	}
}

// The buffer follows the bytes received: announcing 65535 bytes and
// sending 10 costs one growth step, not 64 KiB.
func TestReadDoQMessageGrowsWithBytes(t *testing.T) {
	in := append([]byte{0xff, 0xff}, make([]byte, 10)...)
	got, err := readDoQMessage(bytes.NewReader(in), nil)
	if !errors.Is(err, errDoQEarlyFIN) || cap(got) > 2*doqGrowStep {
		t.Errorf("readDoQMessage = cap %d, %v; want at most %d, errDoQEarlyFIN", cap(got), err, 2*doqGrowStep)
	}
}

func FuzzDoQFrame(f *testing.F) {
	f.Add([]byte{0, 3, 1, 2, 3}, uint8(1))
	f.Add([]byte{0, 0}, uint8(2))
	f.Add([]byte{0xff, 0xff, 1}, uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		got, err := readDoQMessage(chunks(in, int(step)), nil)
		if len(got) > 2+MaxSize {
			t.Fatalf("buffer of %d bytes", len(got))
		}
		if err != nil {
			return
		}
		// A message read whole is exactly the input after its prefix.
		n := int(binary.BigEndian.Uint16(in))
		if len(in) != 2+n || !bytes.Equal(got[2:], in[2:]) {
			t.Fatalf("read %x from %x", got[2:], in)
		}
	})
}

func TestPadDoQ(t *testing.T) {
	for _, name := range []string{"a.", "example.org.", "a-much-longer-name.with.several.labels.example."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		q.SetEdns0(1232, true)
		b, _ := q.Pack()
		p := padDoQ(nil, b)
		if len(p)%doqPadBlock != 0 {
			t.Errorf("%s: padded to %d bytes; want a multiple of %d", name, len(p), doqPadBlock)
		}
		m := new(dns.Msg)
		if err := m.Unpack(p); err != nil {
			t.Fatalf("%s: padded message does not parse: %v", name, err)
		}
		if o := m.IsEdns0(); o == nil || !o.Do() || len(o.Option) != 1 || o.Option[0].Option() != dns.EDNS0PADDING {
			t.Errorf("%s: OPT %v; want DO kept and one padding option", name, o)
		}
		if again := padDoQ(nil, p); !bytes.Equal(again, p) {
			t.Errorf("%s: padding a padded message changed it", name)
		}
	}
}

func FuzzDoQPad(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	plain, _ := q.Pack()
	q.SetEdns0(1232, false)
	edns, _ := q.Pack()
	f.Add(plain)
	f.Add(edns)
	f.Fuzz(func(t *testing.T, b []byte) {
		p := padDoQ(nil, b)
		if len(p) > max(len(b), MaxSize) {
			t.Fatalf("padded to %d bytes from %d", len(p), len(b))
		}
		if !bytes.Equal(p[:min(len(b), len(p))], b) && len(p) == len(b) {
			t.Fatalf("unpadded message changed")
		}
		if len(p) != len(b) && len(p)%doqPadBlock != 0 {
			t.Fatalf("padded to %d bytes; want a multiple of %d", len(p), doqPadBlock)
		}
		// Whatever miekg/dns could read before padding, it reads after.
		var m dns.Msg
		if m.Unpack(b) == nil && len(p) != len(b) {
			if err := m.Unpack(p); err != nil {
				t.Fatalf("padded message does not parse: %v", err)
			}
		}
	})
}
