package nmtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
)

// Logs is a slog.Handler that keeps every record it is given, at every
// level, for tests of what a server logs: give Logs.Logger() as
// nm.Config.Logger. Handlers derived with WithAttrs and WithGroup record
// into the same Logs (their attributes added to the record, groups
// ignored).
type Logs struct {
	shared *logStore
	attrs  []slog.Attr
}

type logStore struct {
	mu      sync.Mutex
	recs    []slog.Record
	changed chan struct{} // closed and replaced at each record; guarded by mu
}

// NewLogs returns an empty Logs.
func NewLogs() *Logs {
	return &Logs{shared: &logStore{changed: make(chan struct{})}}
}

// Logger returns a logger that records into l.
func (l *Logs) Logger() *slog.Logger { return slog.New(l) }

// Enabled reports true at every level.
func (l *Logs) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps a copy of r.
func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(l.attrs...)
	s := l.shared
	s.mu.Lock()
	s.recs = append(s.recs, r)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// WithAttrs returns a handler that records into l with as added.
func (l *Logs) WithAttrs(as []slog.Attr) slog.Handler {
	return &Logs{shared: l.shared, attrs: append(append([]slog.Attr(nil), l.attrs...), as...)}
}

// WithGroup returns l: groups are not recorded.
func (l *Logs) WithGroup(string) slog.Handler { return l }

// Records returns the records kept with message msg, in order.
func (l *Logs) Records(msg string) []slog.Record {
	recs, _ := l.records(msg)
	return recs
}

func (l *Logs) records(msg string) ([]slog.Record, <-chan struct{}) {
	s := l.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []slog.Record
	for _, r := range s.recs {
		if r.Message == msg {
			recs = append(recs, r)
		}
	}
	return recs, s.changed
}

// Wait returns the first record with message msg, waiting for it at most
// timeout; it fails the test if none comes.
func (l *Logs) Wait(t testing.TB, msg string, timeout time.Duration) slog.Record {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		recs, changed := l.records(msg)
		if len(recs) > 0 {
			return recs[0]
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("nmtest: no log record %q within %v", msg, timeout)
		}
	}
}

// Attr returns the value of r's attribute key, and whether r has it.
func Attr(r slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value.Resolve(), true
			return false
		}
		return true
	})
	return v, found
}

// LogManager returns a manager with workers shards logging into a new
// Logs, closed when the test ends.
func LogManager(t testing.TB, workers int) (*nm.Manager, *Logs) {
	t.Helper()
	logs := NewLogs()
	m, err := nm.New(nm.Config{Workers: workers, Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, logs
}

// One checks that exactly one record of msg was logged, at level, with
// the string values given as key, value pairs, and returns it.
func (l *Logs) One(t testing.TB, msg string, level slog.Level, kv ...string) slog.Record {
	t.Helper()
	recs := l.Records(msg)
	if len(recs) != 1 {
		t.Fatalf("%d records %q; want 1", len(recs), msg)
	}
	r := recs[0]
	if r.Level != level {
		t.Errorf("%q at %v; want %v", msg, r.Level, level)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if v, _ := Attr(r, kv[i]); v.String() != kv[i+1] {
			t.Errorf("%q: %s %v; want %v", msg, kv[i], v, kv[i+1])
		}
	}
	return r
}
