package core

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// The rate limit of the manager's log, per message: LogBurst records at
// once, then LogRate a second.
const (
	LogBurst = 10
	LogRate  = 2
)

// maxLogKeys bounds the messages limited separately; records of further
// messages share one limit, so that a program logging messages it builds
// cannot make the limiter grow.
const maxLogKeys = 256

// rateHandler is the slog.Handler the manager wraps around
// Config.Logger's: it passes at most burst records of one message at once
// and rate a second after that, at every level, and adds a "suppressed"
// attribute with the number of that message's records dropped since the
// last one it passed. A record's Message is its key: the library logs
// constant messages. Handlers derived by WithAttrs and WithGroup share
// the limits. Dropping a record takes no lock and allocates nothing.
type rateHandler struct {
	inner slog.Handler
	lim   *rateLimits
}

// rateLimits are the limits shared by a rateHandler and those derived
// from it.
type rateLimits struct {
	interval int64        // nanoseconds between records passed, past the burst
	window   int64        // (burst-1)*interval: how far ahead of now a bucket may be
	now      func() int64 // monotonic nanoseconds
	keys     atomic.Pointer[map[string]*logBucket]
	other    logBucket // the messages past maxLogKeys
	mu       sync.Mutex
}

// logBucket is the limit of one message, a generic cell rate algorithm:
// tat is the time at which the bucket would be empty again.
type logBucket struct {
	tat        atomic.Int64
	suppressed atomic.Int64
}

func newRateHandler(inner slog.Handler, burst, rate int, now func() int64) *rateHandler {
	if now == nil {
		start := time.Now()
		now = func() int64 { return int64(time.Since(start)) }
	}
	interval := int64(time.Second) / int64(rate)
	lim := &rateLimits{interval: interval, window: int64(burst-1) * interval, now: now}
	keys := make(map[string]*logBucket)
	lim.keys.Store(&keys)
	return &rateHandler{inner: inner, lim: lim}
}

func (h *rateHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *rateHandler) Handle(ctx context.Context, r slog.Record) error {
	b := h.lim.bucket(r.Message)
	if !h.lim.take(b) {
		b.suppressed.Add(1)
		return nil
	}
	if n := b.suppressed.Swap(0); n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("suppressed", n))
	}
	return h.inner.Handle(ctx, r)
}

func (h *rateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateHandler{inner: h.inner.WithAttrs(as), lim: h.lim}
}

func (h *rateHandler) WithGroup(name string) slog.Handler {
	return &rateHandler{inner: h.inner.WithGroup(name), lim: h.lim}
}

// bucket returns msg's bucket, made on first use.
func (l *rateLimits) bucket(msg string) *logBucket {
	if b := (*l.keys.Load())[msg]; b != nil {
		return b
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.keys.Load()
	if b := old[msg]; b != nil {
		return b
	}
	if len(old) >= maxLogKeys {
		return &l.other
	}
	keys := make(map[string]*logBucket, len(old)+1)
	for k, v := range old {
		keys[k] = v
	}
	b := new(logBucket)
	keys[msg] = b
	l.keys.Store(&keys)
	return b
}

// take reports whether b lets a record pass now, and if so counts it.
func (l *rateLimits) take(b *logBucket) bool {
	now := l.now()
	for {
		tat := b.tat.Load()
		next := max(tat, now)
		if next-now > l.window {
			return false
		}
		if b.tat.CompareAndSwap(tat, next+l.interval) {
			return true
		}
	}
}

// DrainEnded returns the attributes of a log record saying that a drain
// begun at start ended with err (nil: drained; else cut short), after
// attrs.
func DrainEnded(start time.Time, err error, attrs ...any) []any {
	attrs = append(attrs, "drained", err == nil, "took", time.Since(start))
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	return attrs
}
