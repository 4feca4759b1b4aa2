package dnsmsg

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rainbowduck/netmgr/nm"
)

// frames returns count messages of varied sizes and their framed stream.
func frames(count int) (msgs [][]byte, stream []byte) {
	for i := 0; i < count; i++ {
		m := bytes.Repeat([]byte{byte(i)}, 12+i*37%700)
		msgs = append(msgs, m)
		stream = appendFrame(stream, m)
	}
	return msgs, stream
}

// feed writes the chunks and collects every message, failing on errors.
func feed(t testing.TB, a *assembler, chunks [][]byte) [][]byte {
	t.Helper()
	var got [][]byte
	for _, c := range chunks {
		a.Write(c)
		for {
			m, err := a.Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if m == nil {
				break
			}
			got = append(got, append([]byte(nil), m...))
		}
	}
	return got
}

func equal(t testing.TB, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages; want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d = %x; want %x", i, got[i], want[i])
		}
	}
}

func TestAssemblerSplitsAndMerges(t *testing.T) {
	msgs, stream := frames(20)
	tests := []struct {
		name   string
		chunks func() [][]byte
	}{
		{"all at once", func() [][]byte { return [][]byte{stream} }},
		{"byte by byte", func() [][]byte {
			var c [][]byte
			for i := range stream {
				c = append(c, stream[i:i+1])
			}
			return c
		}},
		{"half a prefix", func() [][]byte { return [][]byte{stream[:1], stream[1:]} }},
		{"prefix then body", func() [][]byte { return [][]byte{stream[:2], stream[2:]} }},
	}
	// A split at every position of the first two messages.
	for cut := 1; cut < 2+len(msgs[0])+2+len(msgs[1]); cut++ {
		tests = append(tests, struct {
			name   string
			chunks func() [][]byte
		}{fmt.Sprintf("cut at %d", cut), func() [][]byte { return [][]byte{stream[:cut], stream[cut:]} }})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAssembler(0)
			equal(t, feed(t, a, tt.chunks()), msgs)
			if a.Buffered() != 0 {
				t.Errorf("Buffered() = %d after the last message", a.Buffered())
			}
		})
	}
}

func TestAssemblerRandomSplits(t *testing.T) {
	msgs, stream := frames(200)
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 100; round++ {
		var chunks [][]byte
		for rest := stream; len(rest) > 0; {
			n := min(1+r.IntN(3000), len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		equal(t, feed(t, newAssembler(0), chunks), msgs)
	}
}

func TestAssemblerErrors(t *testing.T) {
	a := newAssembler(0)
	a.Write([]byte{0, 3, 'a', 'b', 'c', 0, 0, 0, 1, 'x'})
	if m, err := a.Next(); string(m) != "abc" || err != nil {
		t.Fatalf("Next = %q, %v", m, err)
	}
	if _, err := a.Next(); !errors.Is(err, ErrZeroLength) || !errors.Is(err, nm.ErrBadMessage) {
		t.Errorf("zero length: %v; want ErrZeroLength", err)
	}

	a = newAssembler(512)
	a.Write([]byte{0x02, 0x01}) // 513 bytes announced
	if _, err := a.Next(); !errors.Is(err, nm.ErrTooLarge) {
		t.Errorf("oversized: %v; want ErrTooLarge", err)
	}

	// The largest message, 65535 bytes, passes; the buffer grows for it.
	big := bytes.Repeat([]byte{7}, MaxSize)
	a = newAssembler(0)
	got := feed(t, a, [][]byte{appendFrame(nil, big)[:1000], appendFrame(nil, big)[1000:]})
	equal(t, got, [][]byte{big})
}

func TestAssemblerClearInsideConsumer(t *testing.T) {
	_, stream := frames(5)
	a := newAssembler(0)
	a.Write(stream)
	if m, _ := a.Next(); m == nil {
		t.Fatal("no first message")
	}
	// The consumer decides to drop the rest (say, the connection is going).
	a.Clear()
	if m, err := a.Next(); m != nil || err != nil {
		t.Errorf("Next after Clear = %x, %v; want nothing", m, err)
	}
	if a.Buffered() != 0 {
		t.Errorf("Buffered() = %d after Clear", a.Buffered())
	}
	// It works again afterwards.
	msgs, stream := frames(3)
	equal(t, feed(t, a, [][]byte{stream}), msgs)
}

func TestAssemblerBoundedWorkPerRead(t *testing.T) {
	// 64 KiB of tiny queries in one read: the caller takes a few, and the
	// rest wait in the buffer without being parsed.
	var stream []byte
	for len(stream) < 64<<10 {
		stream = appendFrame(stream, make([]byte, 12))
	}
	a := newAssembler(0)
	a.Write(stream)
	for i := 0; i < 23; i++ {
		if m, err := a.Next(); m == nil || err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if want := len(stream) - 23*14; a.Buffered() != want {
		t.Errorf("Buffered() = %d; want %d", a.Buffered(), want)
	}
}

func BenchmarkAssembler(b *testing.B) {
	_, stream := frames(64)
	a := newAssembler(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		a.Write(stream)
		for m, _ := a.Next(); m != nil; m, _ = a.Next() {
		}
	}
}

// FuzzAssembler checks that any split of a framed stream gives back the
// messages, and that arbitrary input never panics or loops.
func FuzzAssembler(f *testing.F) {
	_, stream := frames(8)
	f.Add(stream, uint16(3))
	f.Add([]byte{0, 0}, uint16(1))
	f.Add([]byte{0xff, 0xff, 1, 2}, uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, step uint16) {
		step = max(step, 1)
		a := newAssembler(0)
		var got []byte
		for rest := data; len(rest) > 0; {
			n := min(int(step), len(rest))
			a.Write(rest[:n])
			rest = rest[n:]
			for {
				m, err := a.Next()
				if err != nil {
					return // a bad prefix ends the stream
				}
				if m == nil {
					break
				}
				got = appendFrame(got, m)
			}
		}
		// What came out, re-framed, is a prefix of the input.
		if !bytes.HasPrefix(data, got) || len(got)+a.Buffered() != len(data) {
			t.Fatalf("out %d bytes + buffered %d != in %d", len(got), a.Buffered(), len(data))
		}
	})
}

func TestAssemblerKeepCopiesPartialMessages(t *testing.T) {
	msgs, stream := frames(3)
	cut := 2 + len(msgs[0]) + 5 // the second message is cut off
	chunk := append([]byte(nil), stream[:cut]...)
	a := newAssembler(0)
	a.Write(chunk)
	got := feed(t, a, nil)
	a.Keep()
	for i := range chunk {
		chunk[i] = 0xee // the reader reuses its buffer
	}
	got = append(got, feed(t, a, [][]byte{stream[cut:]})...)
	equal(t, got, msgs)
	a.Keep()
	if a.kept != nil || a.src != nil {
		t.Error("an assembler with nothing pending still holds a buffer")
	}
}

func TestAssemblerTrickleCopiesOnce(t *testing.T) {
	// A largest message arriving a byte per read must not be copied once
	// per read (quadratic work, for a peer that wants it).
	big := appendFrame(nil, bytes.Repeat([]byte{7}, MaxSize))
	a := newAssembler(0)
	var got [][]byte
	allocs := testing.AllocsPerRun(1, func() { // runs twice: a warm-up, then the measured run
		for i := range big {
			a.Write(big[i : i+1])
			if m, err := a.Next(); err != nil {
				t.Fatal(err)
			} else if m != nil {
				got = append(got, m)
			}
			a.Keep()
		}
	})
	if len(got) != 2 || len(got[0]) != MaxSize || len(got[1]) != MaxSize {
		t.Fatalf("got %d messages; want 2 of %d bytes", len(got), MaxSize)
	}
	if allocs > 32 { // a few when it works (more under -race, which empties pools); 60 000 when it does not
		t.Errorf("%v allocations for one message read a byte at a time; want a few", allocs)
	}
}

// TestAssemblerGrowsWithBytesReceived (issue #17): a peer that announces
// the largest message and sends 4 KiB of it makes the assembler hold a
// buffer for what came (at most twice it), not for what was announced.
func TestAssemblerGrowsWithBytesReceived(t *testing.T) {
	a := newAssembler(0)
	chunk := append([]byte{0xff, 0xff}, make([]byte, 4096)...)
	a.Write(chunk)
	if m, err := a.Next(); m != nil || err != nil {
		t.Fatalf("Next = %d bytes, %v; want nothing yet", len(m), err)
	}
	a.Keep()
	if held := a.Held(); held < len(chunk) || held > 2*len(chunk) {
		t.Errorf("holds %d bytes for %d received; want between them and twice them", held, len(chunk))
	}
	// It grows with what arrives, a class at a time, and completes.
	rest := make([]byte, MaxSize-4096)
	for len(rest) > 0 {
		n := min(len(rest), 1000)
		a.Write(rest[:n])
		rest = rest[n:]
		m, err := a.Next()
		if err != nil {
			t.Fatal(err)
		}
		if got := MaxSize + 2 - len(rest) - n; m == nil && a.Held() > 2*(got+n) {
			t.Fatalf("holds %d bytes for %d received", a.Held(), got+n)
		}
		if m != nil && len(m) != MaxSize {
			t.Fatalf("message of %d bytes; want %d", len(m), MaxSize)
		}
		a.Keep()
	}
}

// TestAssemblerBudget: the listener's cap on kept bytes ends the
// connection whose partial message would pass it (nm.ErrTooLarge), and a
// connection that lets go of its buffer gives its share back.
func TestAssemblerBudget(t *testing.T) {
	b := &budget{max: 16 << 10}
	a, c := newAssembler(0), newAssembler(0)
	a.cap, c.cap = b, b
	a.Write(append([]byte{0xff, 0xff}, make([]byte, 8000)...))
	a.Next()
	a.Keep() // 8 KiB of the 16
	c.Write(append([]byte{0xff, 0xff}, make([]byte, 9000)...))
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	c.Keep() // would take 16 KiB more
	if _, err := c.Next(); !errors.Is(err, nm.ErrTooLarge) {
		t.Errorf("over the listener's cap: %v; want ErrTooLarge", err)
	}
	if used := b.used.Load(); used != 8<<10 {
		t.Errorf("budget used %d; want %d", used, 8<<10)
	}
	a.Clear()
	c.Clear()
	if used := b.used.Load(); used != 0 {
		t.Errorf("budget used %d after Clear; want 0", used)
	}
}
