// Package nmtest checks the event-channel contract of netmgr in tests: a
// channel delivers 0..n events without error, then exactly one final event
// with an error, then it is closed, and nothing comes after.
//
// The helpers fail the test (t.Fatalf) at the first breach, or when the
// channel has not finished within the timeout. Timeouts are failure bounds,
// never waits: a channel that behaves returns at once.
package nmtest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
)

// Timeout is a generous failure bound for one channel to finish.
const Timeout = 10 * time.Second

// Result is what a channel delivered.
type Result struct {
	// Data holds a copy of each successful event's bytes, in order.
	Data [][]byte
	// Handles holds each successful event's handle, in order.
	Handles []nm.Handle
	// Final is the final event's error.
	Final error
}

// Want states what a channel must deliver.
type Want struct {
	// Min and Max bound the number of successful events. Max < 0 means no
	// upper bound.
	Min, Max int
	// Final is matched against the final error with errors.Is; nil accepts
	// any error.
	Final error
}

// Drain consumes ch until it is closed, checking the contract, and returns
// what it delivered. It fails the test if an event follows the final one,
// if the channel closes without a final event, or if it has not closed
// within timeout.
func Drain(t testing.TB, ch <-chan nm.Event, timeout time.Duration) Result {
	t.Helper()
	var r Result
	finals := 0
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				if finals == 0 {
					t.Fatalf("nmtest: channel closed after %d events without a final event", len(r.Data))
				}
				return r
			}
			if finals > 0 {
				t.Fatalf("nmtest: event (err %v) after the final event (%v)", ev.Err, r.Final)
			}
			if ev.Err != nil {
				finals++
				r.Final = ev.Err
				continue
			}
			r.Data = append(r.Data, append([]byte(nil), ev.Data...))
			r.Handles = append(r.Handles, ev.Handle)
		case <-deadline.C:
			t.Fatalf("nmtest: channel not closed within %v (%d events, final %v)", timeout, len(r.Data), r.Final)
		}
	}
}

// Expect drains ch and fails the test unless it delivered between w.Min and
// w.Max successful events and a final error matching w.Final.
func Expect(t testing.TB, ch <-chan nm.Event, w Want, timeout time.Duration) Result {
	t.Helper()
	r := Drain(t, ch, timeout)
	n := len(r.Data)
	if n < w.Min || (w.Max >= 0 && n > w.Max) {
		t.Fatalf("nmtest: %d successful events; want %d..%d", n, w.Min, w.Max)
	}
	if w.Final != nil && !errors.Is(r.Final, w.Final) {
		t.Fatalf("nmtest: final error %v; want %v", r.Final, w.Final)
	}
	return r
}

// ExpectFinal drains ch and fails the test unless it delivered exactly n
// successful events and then a final error matching final.
func ExpectFinal(t testing.TB, ch <-chan nm.Event, n int, final error) Result {
	t.Helper()
	return Expect(t, ch, Want{Min: n, Max: n, Final: final}, Timeout)
}

// Next receives one event from ch, for clients where each Read yields one.
// It fails the test if ch is closed or nothing arrives within timeout.
func Next(t testing.TB, ch <-chan nm.Event, timeout time.Duration) nm.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("nmtest: channel closed; want an event")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("nmtest: no event within %v", timeout)
	}
	panic("unreachable")
}

// NextErr receives one event and fails the test unless its error matches
// want (nil: a successful event).
func NextErr(t testing.TB, ch <-chan nm.Event, want error) nm.Event {
	t.Helper()
	ev := Next(t, ch, Timeout)
	if want == nil && ev.Err != nil || want != nil && !errors.Is(ev.Err, want) {
		t.Fatalf("nmtest: event error %v; want %v", ev.Err, want)
	}
	return ev
}

// Closed fails the test unless ch is closed with nothing left in it,
// within timeout.
func Closed(t testing.TB, ch <-chan nm.Event, timeout time.Duration) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("nmtest: event (err %v); want the channel closed", ev.Err)
		}
	case <-time.After(timeout):
		t.Fatalf("nmtest: channel not closed within %v", timeout)
	}
}

// Manager returns a new manager with the given number of shards, closed
// when the test ends.
func Manager(t testing.TB, workers int) *nm.Manager {
	t.Helper()
	m, err := nm.New(nm.Config{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Serve answers each request on ch, a listener's channel, with the replies
// reply returns for it (none: no answer), then detaches the request's
// handle, until ch is closed. Replies that fail with nm.ErrClosed or
// nm.ErrCanceled (the listener closed first) are expected; other send errors fail the test. The
// returned function waits for ch to close and returns what it delivered:
// the requests' bytes and the final error.
func Serve(t testing.TB, ch <-chan nm.Event, reply func(req []byte) [][]byte) (wait func() Result) {
	done := make(chan Result, 1)
	go func() {
		var r Result
		for ev := range ch {
			if ev.Err != nil {
				r.Final = ev.Err
				continue
			}
			r.Data = append(r.Data, append([]byte(nil), ev.Data...))
			for _, b := range reply(ev.Data) {
				if err := ev.Handle.Send(b); err != nil && !errors.Is(err, nm.ErrCanceled) && !errors.Is(err, nm.ErrClosed) {
					t.Errorf("nmtest: Send: %v", err)
				}
			}
			ev.Handle.Detach()
		}
		done <- r
	}()
	return func() Result {
		t.Helper()
		select {
		case r := <-done:
			return r
		case <-time.After(Timeout):
			t.Fatalf("nmtest: channel not closed within %v", Timeout)
			return Result{}
		}
	}
}

// SkipOutsideCI skips the test for the reason given when it runs outside
// CI, and fails it in CI (CI set in the environment), where whatever it
// lacks must have been provided.
func SkipOutsideCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("in CI: "+format, args...)
	}
	t.Skipf(format, args...)
}
