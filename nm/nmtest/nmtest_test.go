package nmtest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a testing.TB whose Fatalf records the failure and unwinds.
type recorder struct {
	testing.TB
	failed string
}

type fatal struct{}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(fatal{})
}

// run calls fn with a recorder and returns the failure it reported.
func run(t *testing.T, fn func(tb testing.TB)) (failure string) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(fatal); !ok {
				panic(p)
			}
		}
		failure = r.failed
	}()
	fn(r)
	return ""
}

func channel(evs ...nm.Event) <-chan nm.Event {
	ch := make(chan nm.Event, len(evs))
	for _, ev := range evs {
		ch <- ev
	}
	close(ch)
	return ch
}

var (
	data  = nm.Event{Data: []byte("x")}
	final = nm.Event{Err: nm.ErrCanceled}
	other = nm.Event{Err: nm.ErrEOF}
)

func TestExpect(t *testing.T) {
	never := make(chan nm.Event)
	tests := []struct {
		name string
		ch   <-chan nm.Event
		want Want
		fail bool
	}{
		{"exact", channel(data, data, final), Want{Min: 2, Max: 2, Final: nm.ErrCanceled}, false},
		{"any final", channel(final), Want{Max: -1}, false},
		{"too few", channel(data, final), Want{Min: 2, Max: 2}, true},
		{"too many", channel(data, data, final), Want{Min: 0, Max: 1}, true},
		{"wrong final", channel(other), Want{Final: nm.ErrCanceled}, true},
		{"no final", channel(data), Want{Max: -1}, true},
		{"event after final", channel(final, data), Want{Max: -1}, true},
		{"two finals", channel(final, other), Want{Max: -1}, true},
		{"never closed", never, Want{Max: -1}, true},
	}
	for _, tt := range tests {
		failure := run(t, func(tb testing.TB) { Expect(tb, tt.ch, tt.want, 20*time.Millisecond) })
		if (failure != "") != tt.fail {
			t.Errorf("%s: failure %q; want failure %v", tt.name, failure, tt.fail)
		}
	}
}

func TestNext(t *testing.T) {
	if ev := NextErr(t, channel(other), nm.ErrEOF); !errors.Is(ev.Err, nm.ErrEOF) {
		t.Errorf("NextErr = %v", ev.Err)
	}
	if f := run(t, func(tb testing.TB) { NextErr(tb, channel(data), nm.ErrEOF) }); f == "" {
		t.Error("NextErr accepted a data event for an error")
	}
	if f := run(t, func(tb testing.TB) { Next(tb, channel(), time.Second) }); f == "" {
		t.Error("Next accepted a closed channel")
	}
	if f := run(t, func(tb testing.TB) { Next(tb, make(chan nm.Event), 10*time.Millisecond) }); f == "" {
		t.Error("Next accepted silence")
	}
	if f := run(t, func(tb testing.TB) { Closed(tb, channel(data), time.Second) }); f == "" {
		t.Error("Closed accepted a pending event")
	}
	Closed(t, channel(), time.Second)
}
