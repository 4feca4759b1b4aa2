package dnsmsg_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// DoH timers mean the time with no stream open (idle) and the time to the
// first request (initial): frames that carry no request do not extend
// them.

// endedWhilePinging sends a PING every period (reading what comes back)
// until the server ends the connection, and returns how long that took;
// nmtest.Timeout bounds a failure.
func endedWhilePinging(t *testing.T, r *rawH2, period time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		r.ended(nmtest.Timeout)
	}()
	tick := time.NewTicker(period) // the client's pace, not a wait for an event
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ended:
			return time.Since(start)
		case <-tick.C:
			if time.Since(start) > nmtest.Timeout {
				t.Fatal("the connection was kept while the client pinged")
			}
			r.fr.WritePing(false, [8]byte{byte(i)})
		}
	}
}

// TestDoHPingsDoNotExtendTimeouts: a client that sends a PING every
// eighth of the timeout is cut off at the initial timeout (no request
// yet) or at the idle timeout (after its request was answered).
func TestDoHPingsDoNotExtendTimeouts(t *testing.T) {
	const timeout = 400 * time.Millisecond
	for _, request := range []bool{false, true} {
		name := map[bool]string{false: "initial", true: "idle"}[request]
		t.Run(name, func(t *testing.T) {
			m := newManager(t, 1)
			var cfg dnsmsg.HTTPConfig
			cfg.Stream.Timeouts.Initial = timeout
			cfg.Stream.Timeouts.Idle = timeout
			l := hkinds[0].listen(t, m, cfg)
			wait := nmtest.Serve(t, requests(l), asReply)
			defer func() { l.Close(); wait() }()
			addr := l.Addr().String()
			r := dialRawH2(t, addr)
			if request {
				r.headers(1, true, getQuery(t, addr, "idle.example", 1)...)
				if got := r.closed(true, 1)[1]; got != http.StatusOK {
					t.Fatalf("status %d; want 200", got)
				}
			}
			d := endedWhilePinging(t, r, timeout/8)
			if d > 2*timeout {
				t.Errorf("cut off after %v of PINGs; want about the %s timeout (%v)", d, name, timeout)
			}
		})
	}
}

// TestDoHQuietFrameCap: a connection with no stream open that sends
// frames without end (PINGs, read and answered) is cut off as a flood
// before its idle timeout, counted.
func TestDoHQuietFrameCap(t *testing.T) {
	m := newManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	defer func() { l.Close(); wait() }()
	r := dialRawH2(t, l.Addr().String())
	flood(t, r, 100_000, func(i int) error { return r.fr.WritePing(false, [8]byte{byte(i)}) })
	if n := m.Stats().Of(nm.HTTP).Floods; n != 1 {
		t.Errorf("Floods = %d; want 1", n)
	}
	stillServes(t, l)
}
