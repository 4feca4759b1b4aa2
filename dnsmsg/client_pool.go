package dnsmsg

import (
	"context"
	"sync"
)

// DefaultMaxConns is how many connections a Client keeps at most to each
// stream or DoH upstream when ClientConfig.MaxConns is zero.
const DefaultMaxConns = 2

// pooled is a connection of a pool: safe for concurrent use, queries
// pipelined on it.
type pooled interface {
	// exchange sends the wire query q (not modified) and returns its
	// reply with q's ID; every wait ends with ctx.
	exchange(ctx context.Context, q []byte) ([]byte, error)
	load() int    // queries in flight now
	broken() bool // no new query can go on it: it ended, or (DoH) got GOAWAY
	close()       // ends the connection; queries in flight fail
}

// pool is the set of connections of one upstream. Queries go to the least
// loaded connection; a new one is dialed while every connection is busy
// and the pool is under its size. Broken connections are dropped when
// next looked at, so the next query dials a fresh one.
type pool struct {
	max  int
	dial func(ctx context.Context) (pooled, error)

	mu      sync.Mutex
	conns   []pooled // guarded by mu
	dialing int      // dials under way; guarded by mu
	closed  bool     // guarded by mu
	// changed is closed, and replaced, when a dial ends: callers that
	// found every place taken by dials wait on it. Guarded by mu.
	changed chan struct{}
}

func newPool(max int, dial func(ctx context.Context) (pooled, error)) *pool {
	if max <= 0 {
		max = DefaultMaxConns
	}
	return &pool{max: max, dial: dial, changed: make(chan struct{})}
}

// get returns the connection a query should use, dialing one if needed;
// it waits for dials of others within ctx.
func (p *pool) get(ctx context.Context) (pooled, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errClientClosed
		}
		best := p.leastLoaded()
		full := len(p.conns)+p.dialing >= p.max
		if best != nil && (best.load() == 0 || full) {
			p.mu.Unlock()
			return best, nil
		}
		if !full {
			p.dialing++
			p.mu.Unlock()
			return p.dialOne(ctx, best)
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		}
	}
}

// leastLoaded drops broken connections and returns the least loaded of
// the others, or nil. Called with mu held.
func (p *pool) leastLoaded() pooled {
	var best pooled
	live := p.conns[:0]
	for _, c := range p.conns {
		if c.broken() {
			if c.load() == 0 {
				c.close() // else its last query closes it
			}
			continue
		}
		live = append(live, c)
		if best == nil || c.load() < best.load() {
			best = c
		}
	}
	clear(p.conns[len(live):])
	p.conns = live
	return best
}

// dialOne dials a connection for the pool; if that fails and busy is not
// nil, the query goes on busy rather than failing.
func (p *pool) dialOne(ctx context.Context, busy pooled) (pooled, error) {
	c, err := p.dial(ctx)
	p.mu.Lock()
	p.dialing--
	close(p.changed)
	p.changed = make(chan struct{})
	if err == nil && p.closed {
		err = errClientClosed
		c.close()
	}
	if err == nil {
		p.conns = append(p.conns, c)
	}
	p.mu.Unlock()
	if err != nil && busy != nil && !busy.broken() {
		return busy, nil
	}
	return c, err
}

// close ends every connection of the pool.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}
