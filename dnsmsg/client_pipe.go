package dnsmsg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// pipe is a pooled TCP or TLS connection of a Client: queries from any
// number of callers are pipelined on it, each under a wire ID of its own,
// and one reader goroutine hands each reply to the caller waiting for its
// ID.
type pipe struct {
	m     *core.Manager
	h     nm.Handle // the connection; the reader detaches it when it ends
	stats *core.Counters
	// slots holds a token per query in flight: the in-flight bound. A
	// caller waits for room, within its context; the token goes back when
	// the query is over, answered or not.
	slots chan struct{}
	// done is closed by the reader when the connection has ended; err then
	// says why.
	done     chan struct{}
	inFlight atomic.Int32 // queries holding a slot, for the pool's choice
	closed   atomic.Bool  // the Client closed the connection

	mu      sync.Mutex
	waiters map[uint16]*waiter // by wire ID; guarded by mu
	err     error              // why the connection ended; guarded by mu
}

// waiter is one query waiting for its reply on a pipe.
type waiter struct {
	query []byte // the query as sent, to check the reply's question
	// reply gets the reply, or the error that ended the connection. The
	// reader sends at most once, and the buffer of 1 means it never waits.
	reply chan result
}

type result struct {
	msg []byte
	err error
}

func newPipe(m *core.Manager, h nm.Handle, kind core.Transport, maxInFlight int) (*pipe, error) {
	streamhook.SetFramed(core.Handle(h)) // Received counts replies, not reads
	p := &pipe{
		m:       m,
		h:       h,
		stats:   countersOf(core.Handle(h), kind),
		slots:   make(chan struct{}, maxInFlight),
		done:    make(chan struct{}),
		waiters: make(map[uint16]*waiter),
	}
	// Reading starts before any query can go on the pipe: a handle
	// closed before its first Read would end with no event at all.
	events := h.Read()
	if err := m.Go(func() { p.read(events) }); err != nil {
		h.Detach()
		return nil, err
	}
	return p, nil
}

func (p *pipe) load() int { return int(p.inFlight.Load()) }

func (p *pipe) broken() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// close ends the connection for the Client: its queries fail with
// nm.ErrCanceled.
func (p *pipe) close() {
	p.closed.Store(true)
	p.h.Close()
}

// exchange sends the wire query q (the caller's; it is copied) and waits
// for its reply, which it returns with q's ID. Every wait ends with ctx.
func (p *pipe) exchange(ctx context.Context, q []byte) ([]byte, error) {
	var pfx [2]byte
	if err := prefix(&pfx, q); err != nil {
		return nil, err
	}
	select {
	case p.slots <- struct{}{}:
	case <-p.done:
		return nil, p.final()
	case <-ctx.Done():
		return nil, ctxError(ctx)
	}
	p.inFlight.Add(1)
	defer func() {
		p.inFlight.Add(-1)
		<-p.slots
	}()
	w := &waiter{query: bytes.Clone(q), reply: make(chan result, 1)}
	sent := make(chan error, 1) // the send's outcome; buffered: nobody may be left to take it
	id, err := p.send(w, pfx[:], sent)
	if err != nil {
		return nil, err
	}
	r, err := p.await(ctx, id, w, sent)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(r, ID(q))
	return r, nil
}

// await waits for w's reply; a reply that came wins over ctx's end.
func (p *pipe) await(ctx context.Context, id uint16, w *waiter, sent <-chan error) ([]byte, error) {
	for {
		select {
		case r := <-w.reply:
			return r.msg, r.err
		case err := <-sent:
			sent = nil
			if err != nil {
				// The connection cannot be written: it is over, and its
				// reader fails every query on it with the reason.
				p.h.Close()
			}
		case <-ctx.Done():
			if p.forget(id) {
				return nil, ctxError(ctx)
			}
			r := <-w.reply // the reader took it: its result is on the way
			return r.msg, r.err
		}
	}
}

// send gives w a random wire ID no other query in flight has, writes it
// into w's query and queues the query. It holds mu so that the reader,
// which releases the handle after setting err under mu, cannot release it
// meanwhile; queueing does not wait for the network.
func (p *pipe) send(w *waiter, pfx []byte, sent chan<- error) (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return 0, p.err
	}
	id := uint16(rand.Uint32())
	for p.waiters[id] != nil {
		id = uint16(rand.Uint32())
	}
	binary.BigEndian.PutUint16(w.query, id)
	if err := stream.SendPrefixedAsync(p.h, pfx, w.query, sent); err != nil {
		if errors.Is(err, nm.ErrClosed) && !p.closed.Load() && !p.m.Closing() {
			// The connection broke; its reader has yet to tell.
			return 0, fmt.Errorf("%w: the connection failed (%v)", nm.ErrConnReset, err)
		}
		return 0, err
	}
	p.waiters[id] = w
	return id, nil
}

// forget drops the query id and reports whether it was still waiting.
func (p *pipe) forget(id uint16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.waiters[id]
	delete(p.waiters, id)
	return ok
}

func (p *pipe) final() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// read is the pipe's reader goroutine: it ends with the connection.
func (p *pipe) read(events <-chan nm.Event) {
	a := newAssembler(MaxSize)
	var final error
	for ev := range events {
		if ev.Err != nil {
			final = ev.Err
			break
		}
		a.Write(ev.Data)
		if err := p.dispatch(a); err != nil {
			final = err
			break
		}
		a.Keep() // the next event ends this one's bytes
	}
	a.Clear()
	p.end(final)
}

// dispatch hands every complete reply in a to its waiter. A reply nobody
// waits for (late, duplicated, or with a wrong ID or question) is dropped
// and counted.
func (p *pipe) dispatch(a *assembler) error {
	for {
		msg, err := a.Next()
		if err != nil {
			p.stats.Dropped.Add(1)
			p.h.Close()
			return err
		}
		if msg == nil {
			return nil
		}
		p.stats.Received.Add(1)
		if !p.deliver(msg) {
			p.stats.Dropped.Add(1)
		}
	}
}

// deliver hands msg, copied, to the query waiting for it.
func (p *pipe) deliver(msg []byte) bool {
	if len(msg) < HeaderLen || !IsResponse(msg) {
		return false
	}
	p.mu.Lock()
	w, ok := p.waiters[ID(msg)]
	if ok && answers(msg, w.query) {
		delete(p.waiters, ID(msg))
	} else {
		ok = false
	}
	p.mu.Unlock()
	if ok {
		w.reply <- result{msg: bytes.Clone(msg)}
	}
	return ok
}

// end fails every query still waiting with the reason the connection
// ended, mapped to a sentinel of nm.
func (p *pipe) end(final error) {
	local := p.closed.Load() || p.m.Closing()
	switch {
	case final == nil && local:
		final = fmt.Errorf("%w: the connection was closed", nm.ErrCanceled)
	case final == nil || errors.Is(final, nm.ErrCanceled) && !local:
		// Closed neither by the Client nor by the manager: a write
		// failed and closed it.
		final = fmt.Errorf("%w: the connection failed", nm.ErrConnReset)
	}
	p.mu.Lock()
	p.err = final
	waiters := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	close(p.done)
	for _, w := range waiters {
		w.reply <- result{err: final}
	}
	p.h.Close()
	p.h.Detach()
}
