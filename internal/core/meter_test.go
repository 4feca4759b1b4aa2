package core

import (
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
