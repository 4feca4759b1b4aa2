package core

import (
	"net/netip"
	"testing"
	"time"
)

func TestLatencyBuckets(t *testing.T) {
	var l Latency
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {999 * time.Nanosecond, 0}, {time.Microsecond, 0}, {time.Microsecond + 1, 1},
		{2 * time.Microsecond, 1}, {2*time.Microsecond + 1, 2}, {1000 * time.Microsecond, 10},
		{time.Second, 20}, {time.Hour, LatencyBuckets - 1}, {-time.Second, 0},
	} {
		before := l.counts[c.want].Load()
		l.Observe(c.d)
		if l.counts[c.want].Load() != before+1 {
			t.Errorf("Observe(%v) missed bucket %d", c.d, c.want)
		}
		if b := LatencyBound(c.want); b != 0 && c.d > b {
			t.Errorf("Observe(%v) in bucket %d whose bound is %v", c.d, c.want, b)
		}
		if c.want > 0 && c.d <= LatencyBound(c.want-1) {
			t.Errorf("Observe(%v) in bucket %d, but the bucket before holds up to %v", c.d, c.want, LatencyBound(c.want-1))
		}
	}
}

// BenchmarkRequestClock is what a request's latency costs on the hot path:
// the stamp at delivery and the observation at the first reply.
func BenchmarkRequestClock(b *testing.B) {
	var l Latency
	c := &conv{lat: &l}
	b.ReportAllocs()
	for b.Loop() {
		c.born.Store(sinceEpoch())
		c.replied()
	}
}

// nopSocket is a socket that does nothing, for handles in tests.
type nopSocket struct{}

func (nopSocket) Send(Handle, []byte) error                    { return nil }
func (nopSocket) SendAsync(Handle, []byte, chan<- error) error { return nil }
func (nopSocket) ReadStop(Handle)                              {}
func (nopSocket) Close(Handle)                                 {}
func (nopSocket) Released(Handle)                              {}

// A closed meter keeps counting while a handle bound to it lives, and is
// folded into the shard's counters only once the handle is released: the
// totals never lose a count, and closed meters do not pile up.
func TestMeterFoldsOnlyWhenNothingCounts(t *testing.T) {
	m, err := New(Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mt := m.NewMeter(UDP, Listener, "x", "")
	h := NewHandle(m.Shard(1), nopSocket{}, netip.AddrPort{}, netip.AddrPort{})
	h.SetMeter(mt)
	mt.On(m.Shard(1)).Received.Add(1)
	mt.Close()
	for range 3 {
		m.Stats() // looks that would fold a meter thought quiet
	}
	mt.On(m.Shard(1)).Sent.Add(1) // a late reply of the held request
	if st := m.Stats().Of(UDP); st.Received != 1 || st.Sent != 1 {
		t.Fatalf("with a handle held: %+v; want 1 received, 1 sent", st)
	}
	if n := len(m.retired); n != 1 {
		t.Fatalf("%d closed meters kept; want the one still counted on", n)
	}
	h.Detach()
	if st := m.Stats().Of(UDP); st.Received != 1 || st.Sent != 1 {
		t.Fatalf("after the fold: %+v; want 1 received, 1 sent", st)
	}
	if n := len(m.retired); n != 0 {
		t.Fatalf("%d closed meters kept after the last handle went; want 0", n)
	}
	for range 1000 {
		m.NewMeter(TCP, Client, "", "a").Close()
	}
	if n := len(m.retired); n != 0 {
		t.Fatalf("%d closed, unused meters kept; want 0", n)
	}
}
