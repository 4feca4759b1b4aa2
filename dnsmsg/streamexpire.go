package dnsmsg

import (
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
)

// DefaultRequestTimeout is how long a request delivered on a TCP or TLS
// connection may stay unanswered when ServerConfig.RequestTimeout is zero.
const DefaultRequestTimeout = 10 * time.Second

// epoch is the origin of the monotonic times the request timeout keeps.
var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

// pending are a connection's requests in flight, in the order they were
// delivered, for the request timeout: a request that stays unanswered past
// it stops holding its connection (its place in the in-flight bound and
// its reference), so that a leaked or stuck request cannot keep a
// connection open for good.
type pending struct {
	mu    sync.Mutex
	reqs  []pendingReq // guarded by mu; oldest first
	timer *time.Timer  // made on first use; guarded by mu
	armed bool         // the timer will fire; guarded by mu
	ended bool         // the connection ended: no new arming; guarded by mu
}

type pendingReq struct {
	h  core.Handle
	at int64 // monotonic time of the delivery
}

// track notes a request just delivered.
func (c *streamConn) track(rh core.Handle) {
	timeout := c.s.requestTimeout
	if timeout <= 0 {
		return
	}
	p := &c.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, pendingReq{h: rh, at: monotonic()})
	if !p.armed && !p.ended {
		// The timer is left armed when requests are answered in time: it
		// fires at most once per timeout while the connection is busy.
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(timeout, c.expire)
		} else {
			p.timer.Reset(timeout)
		}
	}
}

// untrack forgets a request being released; false if it had expired (its
// place was reclaimed already).
func (c *streamConn) untrack(rh core.Handle) bool {
	if c.s.requestTimeout <= 0 {
		return true
	}
	p := &c.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.reqs {
		if p.reqs[i].h == rh {
			p.reqs = append(p.reqs[:i], p.reqs[i+1:]...)
			p.reqs[len(p.reqs):cap(p.reqs)][0] = pendingReq{} // no stale handle in the spare room
			return true
		}
	}
	return false
}

// expire reclaims the places of the requests past the timeout, and arms
// the timer for the next one. It runs on the timer's goroutine.
func (c *streamConn) expire() {
	timeout := c.s.requestTimeout
	p := &c.pending
	p.mu.Lock()
	now := monotonic()
	n := 0
	for n < len(p.reqs) && now-p.reqs[n].at >= int64(timeout) {
		n++
	}
	p.reqs = append(p.reqs[:0], p.reqs[n:]...)
	clear(p.reqs[len(p.reqs) : len(p.reqs)+n])
	p.armed = len(p.reqs) > 0 && !p.ended
	if p.armed {
		p.timer.Reset(time.Duration(p.reqs[0].at + int64(timeout) - now))
	}
	p.mu.Unlock()
	for range n {
		c.stats.Expired.Add(1)
		c.s.m.Logger().Debug("dnsmsg: request unanswered past the request timeout; its place is reclaimed",
			"peer", c.h.PeerAddr(), "timeout", timeout)
		c.releaseSlot()
	}
}

// stopExpiry stops the timer once the connection has ended and nothing is
// in flight; requests still held keep it, to be reclaimed in their time.
func (c *streamConn) stopExpiry() {
	p := &c.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) == 0 {
		p.ended = true
		if p.timer != nil && p.armed {
			p.timer.Stop()
			p.armed = false
		}
	}
}
