package stream

import (
	"net/netip"
	"sync"
	"time"
)

// Defaults of the admission control of Config.
const (
	DefaultClientPrefix4 = 24
	DefaultClientPrefix6 = 56
	DefaultMaxClients    = 1 << 16
)

// admission limits each client's connections to a listener: how many are
// open at once and how many new ones a second (a token bucket), a client
// being an address prefix (/24, /56 by default). Its table of clients is
// bounded: when it is full, idle entries (no connection open, bucket full)
// are swept out, and a new client that still finds no room is refused
// (fail closed, so that many addresses cannot grow it). Safe for
// concurrent use.
type admission struct {
	perClient    int     // concurrent connections per client; 0: no limit
	rate         float64 // new connections per second per client; 0: no limit
	burst        float64 // bucket size: max(rate, 1)
	bits4, bits6 int
	max          int // entries of clients at most

	mu        sync.Mutex
	clients   map[netip.Prefix]*client // guarded by mu
	lastSweep time.Time                // guarded by mu
}

// client is one prefix's entry in the admission table.
type client struct {
	conns  int       // open now
	tokens float64   // of the rate's bucket, as of last
	last   time.Time // when tokens was computed
}

// newAdmission returns the admission control cfg asks for, or nil if none.
func newAdmission(cfg *Config) *admission {
	if cfg.MaxConnsPerClient <= 0 && cfg.ClientRate <= 0 {
		return nil
	}
	a := &admission{
		perClient: max(cfg.MaxConnsPerClient, 0),
		rate:      max(float64(cfg.ClientRate), 0),
		bits4:     orDefault(cfg.ClientPrefix4, DefaultClientPrefix4, 32),
		bits6:     orDefault(cfg.ClientPrefix6, DefaultClientPrefix6, 128),
		max:       orDefault(cfg.MaxClients, DefaultMaxClients, 1<<30),
		clients:   make(map[netip.Prefix]*client),
	}
	a.burst = max(a.rate, 1)
	return a
}

// orDefault returns v if it is in 1..limit, else def.
func orDefault(v, def, limit int) int {
	if v > 0 && v <= limit {
		return v
	}
	return def
}

// key returns the client prefix of addr.
func (a *admission) key(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := a.bits6
	if addr.Is4() {
		bits = a.bits4
	}
	p, _ := addr.Prefix(bits)
	return p
}

// admit takes a place for a new connection from addr, or returns why it
// is refused ("" when admitted). An admitted connection must be released
// once, with the key returned.
func (a *admission) admit(addr netip.Addr, now time.Time) (netip.Prefix, string) {
	k := a.key(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[k]
	if c == nil {
		if len(a.clients) >= a.max && !a.sweep(now) {
			return k, "too many clients tracked"
		}
		c = &client{tokens: a.burst, last: now}
		a.clients[k] = c
	}
	if a.perClient > 0 && c.conns >= a.perClient {
		return k, "too many connections from the client"
	}
	if a.rate > 0 {
		c.refill(a, now)
		if c.tokens < 1 {
			return k, "client connecting too fast"
		}
		c.tokens--
	}
	c.conns++
	return k, ""
}

// refill adds the tokens earned since c.last.
func (c *client) refill(a *admission, now time.Time) {
	c.tokens = min(a.burst, c.tokens+now.Sub(c.last).Seconds()*a.rate)
	c.last = now
}

// idle reports whether c holds nothing worth keeping: no connection open
// and a full bucket.
func (c *client) idle(a *admission, now time.Time) bool {
	if c.conns > 0 {
		return false
	}
	if a.rate > 0 {
		c.refill(a, now)
		return c.tokens >= a.burst
	}
	return true
}

// sweep removes idle entries and reports whether there is room. It scans
// at most ten times a second, so that a table full of busy clients costs
// a refusal, not a scan, per connection. Called with mu held.
func (a *admission) sweep(now time.Time) bool {
	if now.Sub(a.lastSweep) < 100*time.Millisecond {
		return false
	}
	a.lastSweep = now
	for k, c := range a.clients {
		if c.idle(a, now) {
			delete(a.clients, k)
		}
	}
	return len(a.clients) < a.max
}

// release gives back the place of a connection admitted with key k.
func (a *admission) release(k netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[k]
	if c == nil {
		return
	}
	c.conns--
	if c.conns == 0 && a.rate <= 0 {
		delete(a.clients, k) // nothing to remember
	}
}

// tracked returns the number of clients in the table, for tests.
func (a *admission) tracked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.clients)
}
