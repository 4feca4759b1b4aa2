package core

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logSink is a slog.Handler that records what reaches it; handlers derived
// from it record into the same slice, with their attributes in front.
type logSink struct {
	mu    *sync.Mutex
	recs  *[]slog.Record
	attrs []slog.Attr
	group string
}

func newLogSink() *logSink {
	return &logSink{mu: new(sync.Mutex), recs: new([]slog.Record)}
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }

func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(s.attrs...)
	if s.group != "" {
		r.AddAttrs(slog.String("group", s.group))
	}
	s.mu.Lock()
	*s.recs = append(*s.recs, r)
	s.mu.Unlock()
	return nil
}

func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler {
	c := *s
	c.attrs = append(append([]slog.Attr(nil), s.attrs...), as...)
	return &c
}

func (s *logSink) WithGroup(name string) slog.Handler {
	c := *s
	c.group = name
	return &c
}

func (s *logSink) records() []slog.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]slog.Record(nil), *s.recs...)
}

// attr returns r's attribute key, if any.
func attr(r slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() int64              { return c.t.Load() }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }
func record(level slog.Level, msg string) slog.Record {
	return slog.NewRecord(time.Time{}, level, msg, 0)
}

// An attack that provokes 10000 records of one message in three seconds
// gets burst + rate*3 of them logged; the next one passed says how many
// were dropped.
func TestRateLogBurst(t *testing.T) {
	const burst, rate, total = 10, 2, 10000
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, burst, rate, clock.now)
	elapsed := 3 * time.Second
	step := elapsed / total
	for range total {
		if err := h.Handle(context.Background(), record(slog.LevelWarn, "flood")); err != nil {
			t.Fatal(err)
		}
		clock.advance(step)
	}
	recs := sink.records()
	if limit := burst + int(elapsed/time.Second)*rate; len(recs) > limit || len(recs) < burst {
		t.Fatalf("%d records of %d passed, want between %d and %d", len(recs), total, burst, limit)
	}
	passed, dropped := int64(len(recs)), int64(0)
	for i, r := range recs {
		n, ok := attr(r, "suppressed")
		if i < burst && ok {
			t.Errorf("record %d of the burst says %v suppressed", i, n)
		}
		if ok {
			dropped += n.Int64()
		}
	}
	clock.advance(time.Second)
	h.Handle(context.Background(), record(slog.LevelWarn, "flood"))
	recs = sink.records()
	if len(recs) != int(passed)+1 {
		t.Fatalf("a record a second after the flood: %d records, want %d", len(recs), passed+1)
	}
	n, ok := attr(recs[passed], "suppressed")
	if !ok || n.Int64() <= 0 {
		t.Fatalf("the record after the flood has no suppressed count: %v", recs[passed])
	}
	dropped += n.Int64()
	if passed+dropped != total {
		t.Errorf("%d passed and %d reported suppressed, want %d in all", passed, dropped, total)
	}
	// Quiet again: the next record passes without a count.
	clock.advance(time.Minute)
	h.Handle(context.Background(), record(slog.LevelWarn, "flood"))
	recs = sink.records()
	if _, ok := attr(recs[len(recs)-1], "suppressed"); ok || len(recs) != int(passed)+2 {
		t.Errorf("after a quiet minute: %d records, the last %v", len(recs), recs[len(recs)-1])
	}
}

// Each message has its own limit, at every level alike.
func TestRateLogPerMessage(t *testing.T) {
	const burst = 5
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, burst, 1, clock.now)
	for range 100 {
		h.Handle(context.Background(), record(slog.LevelDebug, "a"))
	}
	for range 100 {
		h.Handle(context.Background(), record(slog.LevelInfo, "b"))
	}
	counts := map[string]int{}
	for _, r := range sink.records() {
		counts[r.Message]++
	}
	if counts["a"] != burst || counts["b"] != burst {
		t.Errorf("records passed: %v, want %d of each", counts, burst)
	}
}

// Handlers derived with WithAttrs and WithGroup share the limit, and keep
// their attributes.
func TestRateLogDerivedShareLimit(t *testing.T) {
	const burst = 3
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, burst, 1, clock.now)
	a := h.WithAttrs([]slog.Attr{slog.String("listener", "x")})
	g := a.WithGroup("g")
	for _, hh := range []slog.Handler{h, a, g, h, a, g} {
		hh.Handle(context.Background(), record(slog.LevelWarn, "m"))
	}
	recs := sink.records()
	if len(recs) != burst {
		t.Fatalf("%d records passed through three derived handlers, want %d", len(recs), burst)
	}
	if v, ok := attr(recs[1], "listener"); !ok || v.String() != "x" {
		t.Errorf("WithAttrs's attribute lost: %v", recs[1])
	}
	if v, ok := attr(recs[2], "group"); !ok || v.String() != "g" {
		t.Errorf("WithGroup's group lost: %v", recs[2])
	}
	clock.advance(time.Second)
	g.Handle(context.Background(), record(slog.LevelWarn, "m"))
	recs = sink.records()
	if n, ok := attr(recs[len(recs)-1], "suppressed"); !ok || n.Int64() != 3 {
		t.Errorf("next record passed: %v, want suppressed=3", recs[len(recs)-1])
	}
}

// Goroutines logging at once share the burst: no more pass than it.
func TestRateLogConcurrent(t *testing.T) {
	const burst = 10
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, burst, 1, clock.now)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				h.Handle(context.Background(), record(slog.LevelWarn, "m"))
			}
		})
	}
	wg.Wait()
	if n := len(sink.records()); n != burst {
		t.Errorf("%d records passed, want %d", n, burst)
	}
}

// A dropped record costs no allocation, through a Logger too.
func TestRateLogDropAllocs(t *testing.T) {
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, 1, 1, clock.now)
	r := record(slog.LevelWarn, "m")
	r.AddAttrs(slog.String("peer", "192.0.2.1:53"))
	h.Handle(context.Background(), r)
	if n := testing.AllocsPerRun(1000, func() { h.Handle(context.Background(), r) }); n != 0 {
		t.Errorf("a dropped record costs %v allocations", n)
	}
	log := slog.New(h)
	err := fmt.Errorf("x")
	if n := testing.AllocsPerRun(1000, func() { log.Warn("m", "err", err, "count", 3) }); n != 0 {
		t.Errorf("a dropped record logged through a Logger costs %v allocations", n)
	}
}

// Messages past maxLogKeys share one limit: the limiter does not grow
// with messages a program builds.
func TestRateLogKeysBounded(t *testing.T) {
	var clock fakeClock
	sink := newLogSink()
	h := newRateHandler(sink, 1, 1, clock.now)
	for i := range 2 * maxLogKeys {
		h.Handle(context.Background(), record(slog.LevelWarn, fmt.Sprint("m", i)))
	}
	if n := len(*h.lim.keys.Load()); n != maxLogKeys {
		t.Errorf("%d messages tracked, want %d", n, maxLogKeys)
	}
	if n := len(sink.records()); n != maxLogKeys+1 {
		t.Errorf("%d records passed, want %d (one per tracked message, one for the rest)", n, maxLogKeys+1)
	}
}
