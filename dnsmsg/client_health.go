package dnsmsg

import (
	"fmt"
	"sync"
	"time"
)

// Defaults of the failing-upstream policy of a Client.
const (
	DefaultMaxFailures = 5
	DefaultBackoff     = time.Second
	DefaultMaxBackoff  = 30 * time.Second
)

// outcome is what a query taught about its upstream's health.
type outcome int

const (
	neutral outcome = iota // the caller gave up: says nothing of the upstream
	healthy
	failed
)

// health tracks an upstream's consecutive failures. After maxFails in a
// row the upstream is down for a backoff (doubling at each failed probe,
// up to maxBackoff) during which queries fail at once; then one query, the
// probe, is let through: its success brings the upstream back, its failure
// starts a longer backoff.
type health struct {
	maxFails   int
	backoff0   time.Duration
	maxBackoff time.Duration

	mu      sync.Mutex
	fails   int       // consecutive failures; guarded by mu
	until   time.Time // down until then; guarded by mu
	current time.Duration
	probing bool // a probe is out; guarded by mu
	// onDown, if set, reports each backoff that starts.
	onDown func(fails int, backoff time.Duration)
}

func newHealth(cfg *ClientConfig, onDown func(fails int, backoff time.Duration)) *health {
	h := &health{maxFails: cfg.MaxFailures, backoff0: cfg.Backoff, maxBackoff: cfg.MaxBackoff, onDown: onDown}
	if h.maxFails == 0 {
		h.maxFails = DefaultMaxFailures
	}
	if h.backoff0 <= 0 {
		h.backoff0 = DefaultBackoff
	}
	if h.maxBackoff <= 0 {
		h.maxBackoff = DefaultMaxBackoff
	}
	h.maxBackoff = max(h.maxBackoff, h.backoff0)
	return h
}

// admit lets a query through, or says why not. probe reports that the
// query is the one probe of an upstream that was down: it must call done.
func (h *health) admit(name string) (probe bool, err error) {
	if h.maxFails < 0 {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fails < h.maxFails {
		return false, nil
	}
	if wait := time.Until(h.until); wait > 0 || h.probing {
		return false, fmt.Errorf("%w: %s failed %d times in a row; next try in %v",
			ErrUpstreamDown, name, h.fails, max(wait, 0).Round(time.Millisecond))
	}
	h.probing = true
	return true, nil
}

// clean reports whether the upstream has no failure to remember: it may
// be forgotten without losing its health.
func (h *health) clean() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails == 0 && !h.probing
}

// done records a query's outcome.
func (h *health) done(probe bool, o outcome) {
	if h.maxFails < 0 || o == neutral && !probe {
		return
	}
	h.mu.Lock()
	if probe {
		h.probing = false
	}
	var down time.Duration // the backoff just started, if any
	switch o {
	case healthy:
		h.fails, h.current = 0, 0
	case failed:
		h.fails++
		if h.fails >= h.maxFails && (h.current == 0 || probe) {
			h.current = min(max(2*h.current, h.backoff0), h.maxBackoff)
			h.until = time.Now().Add(h.current)
			down = h.current
		}
	}
	fails := h.fails
	h.mu.Unlock()
	if down > 0 && h.onDown != nil {
		h.onDown(fails, down)
	}
}
