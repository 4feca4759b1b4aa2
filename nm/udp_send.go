package nm

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/transport"
)

// Replies of a UDP listener socket.
//
// Send copies the reply into the socket's bounded reply queue and returns;
// the queue leaves in one sendmmsg. No timer is involved: a flush happens
//
//   - in Send, when the listener's request channel is empty (no request is
//     waiting for a consumer, so no reply is about to follow), or when the
//     queue holds a receive batch of replies;
//   - in the socket's reader, after it has delivered a receive batch and
//     before it reads again (so before it waits for the socket). Between
//     the two it yields the CPU, so that on few CPUs the consumers answer
//     the batch first and its replies leave together, from the last Send.
//
// While the reader waits for the socket, the first reply that is queued
// without a flush wakes it (a read deadline in the past), and it flushes.
// So a queued reply waits at most until the reader has delivered the batch
// in hand, or until the reader gets the CPU: never behind the processing
// of another request. At low load the request channel is empty at each
// Send, and every reply leaves at once.
//
// One goroutine flushes at a time (flushing); the others append and go on.

// replySlot is the size of a reply slot: the largest reply DNS clients
// usually accept over UDP (the EDNS buffer size of DNS Flag Day 2020).
// Longer replies are copied into a pooled buffer of the largest datagram's
// size. Slots are allocated a chunk (a receive batch) at a time as the
// queue first grows, and kept.
const replySlot = 1232

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// writeBatch is how many receive batches of replies one sendmmsg carries
// at most; a longer round takes several.
const writeBatch = 8

// flushRounds is how many rounds a Send that flushes writes for the others
// at most, when the reader is running and will flush the rest.
const flushRounds = 4

var bigReplies = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// udpReply is one queued reply.
type udpReply struct {
	b    []byte         // the bytes to send: in slot, in *big, or SendAsync's own
	slot []byte         // the slot b was copied into, or nil
	big  *[]byte        // the pooled buffer b was copied into, or nil
	to   netip.AddrPort // the peer
	from netip.Addr     // the source address, or the zero value (the kernel chooses)
	ifx  int            // the interface to send on, or 0 (the kernel chooses)
	done chan<- error   // SendAsync's completion channel, or nil
}

type completion struct {
	done chan<- error
	err  error
}

// replyQueue holds the replies of one listening socket until they are
// written. Its bound is limit replies, queued or being written; Send drops
// a reply past it (counted in SendFailed): a UDP reply never waits.
type replyQueue struct {
	s        *udpListenSocket
	requests chan Event // the listener's request channel; only its length is read
	batch    int        // a Send flushes once this many replies are queued
	limit    int        // replies queued or being written, at most
	wildcard bool       // the socket is bound to a wildcard address: replies name their source

	// Owned by the goroutine that flushes.
	wb     *transport.Batch // one sendmmsg of up to writeBatch receive batches
	flight []udpReply       // the replies being written
	done   []completion     // SendAsync outcomes of the round written

	mu       sync.Mutex
	pending  []udpReply // queued replies, in order; guarded by mu
	free     [][]byte   // unused slots, the last freed first (warm); guarded by mu
	slots    int        // slots allocated, at most limit; guarded by mu
	alive    int        // replies queued or in flight; guarded by mu
	flushing bool       // a goroutine is flushing; guarded by mu
	idle     bool       // the reader is (about to be) waiting for the socket; guarded by mu
	gone     bool       // the reader has stopped for a drain: every Send flushes; guarded by mu
	poked    bool       // the reader's read deadline was set in the past to wake it; guarded by mu
	closed   bool       // the socket is closed: Send fails at once (ErrClosed); guarded by mu
	hook     func()     // tests: run by the flusher before each write; guarded by mu
}

func newReplyQueue(s *udpListenSocket, batch, limit int) (*replyQueue, error) {
	wb, err := transport.NewBatch(s.conn, min(limit, writeBatch*batch), 0)
	if err != nil {
		return nil, err
	}
	q := &replyQueue{
		s: s, requests: s.l.ch, batch: min(batch, limit), limit: limit,
		wildcard: s.local.Addr().IsUnspecified(),
		wb:       wb,
		// These grow as the queue first grows, as the slots do.
		flight:  make([]udpReply, 0, batch),
		pending: make([]udpReply, 0, batch),
		free:    make([][]byte, 0, batch),
	}
	return q, nil
}

// grow adds a chunk of slots. Called with mu held, when none is free.
func (q *replyQueue) grow() {
	n := min(q.batch, q.limit-q.slots)
	chunk := make([]byte, n*replySlot)
	for i := range n {
		q.free = append(q.free, chunk[i*replySlot:(i+1)*replySlot:(i+1)*replySlot])
	}
	q.slots += n
}

// Send queues a copy of b for h's peer and returns; b may be reused at once.
// It fails with ErrOutputFull, dropping b, when the socket's replies are at
// their bound, and with ErrClosed once the listener is closed. The
// outcome of the write is counted (Sent, SendFailed).
func (s *udpListenSocket) Send(h core.Handle, b []byte) error { return s.out.send(h, b, nil) }

// SendAsync queues b itself (not a copy) for h's peer; b must not change
// until done receives the outcome, from the shard.
func (s *udpListenSocket) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	return s.out.send(h, b, done)
}

func (q *replyQueue) send(h core.Handle, b []byte, done chan<- error) error {
	if len(b) > maxDatagram {
		q.s.stats.SendFailed.Add(1)
		return ErrTooLarge
	}
	q.mu.Lock()
	if err := q.room(); err != nil {
		q.mu.Unlock()
		q.s.stats.SendFailed.Add(1)
		return err
	}
	r := udpReply{b: b, to: h.RealPeer(), done: done}
	if q.wildcard {
		r.from, r.ifx = replySource(h)
	}
	if done == nil {
		q.copyIn(&r)
	}
	q.alive++
	q.pending = append(q.pending, r)
	if q.flushing {
		q.mu.Unlock() // the flusher writes it
		return nil
	}
	if len(q.requests) == 0 || len(q.pending) >= q.batch || q.gone {
		q.flushing = true
		q.mu.Unlock()
		q.flush(false)
		return nil
	}
	if q.idle && !q.poked {
		// More requests wait, but the reader sleeps: wake it, so that this
		// reply never waits for the next request's processing.
		q.poked = true
		q.s.conn.SetReadDeadline(aLongTimeAgo)
	}
	q.mu.Unlock()
	return nil
}

// room says why a reply cannot be queued now, or nil. Called with mu held.
func (q *replyQueue) room() error {
	switch {
	case q.closed:
		return ErrClosed // the listener closed: as on every transport
	case q.alive >= q.limit:
		return ErrOutputFull
	}
	return nil
}

// copyIn copies r.b into a free slot, or a pooled buffer if it is longer.
// Called with mu held; alive < limit, so a slot is free or can be made.
func (q *replyQueue) copyIn(r *udpReply) {
	if len(r.b) > replySlot {
		r.big = bigReplies.Get().(*[]byte)
		r.b = append((*r.big)[:0], r.b...)
		return
	}
	if len(q.free) == 0 {
		q.grow()
	}
	n := len(q.free) - 1
	r.slot = q.free[n]
	q.free[n] = nil
	q.free = q.free[:n]
	r.b = append(r.slot[:0], r.b...)
}

// flush writes the queue, one sendmmsg per round, until it is empty. The
// caller has set flushing. A Send's flush hands the rest to the reader
// after flushRounds if the reader is running; the reader's flush marks it
// idle when it ends.
func (q *replyQueue) flush(reader bool) {
	for round := 0; ; round++ {
		q.mu.Lock()
		q.release()
		if len(q.pending) == 0 || !reader && round >= flushRounds && !q.idle {
			q.flushing = false
			if reader {
				q.idle = true
			}
			q.mu.Unlock()
			return
		}
		q.flight, q.pending = q.pending, q.flight
		hook := q.hook
		q.mu.Unlock()
		if hook != nil {
			hook()
		}
		q.write()
		q.complete()
	}
}

// write sends the flight, one sendmmsg per len(wb.Msgs) replies, and
// counts the outcome.
func (q *replyQueue) write() {
	for rs := q.flight; len(rs) > 0; {
		n := min(len(rs), len(q.wb.Msgs))
		q.writeBatch(rs[:n])
		rs = rs[n:]
	}
}

func (q *replyQueue) writeBatch(rs []udpReply) {
	for i := range rs {
		m, r := &q.wb.Msgs[i], &rs[i]
		m.Buf, m.Addr, m.Local, m.IfIndex = r.b, r.to, r.from, r.ifx
	}
	if err := q.wb.Write(len(rs)); transport.IsClosed(err) {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
	}
	q.s.stats.Writes.Add(1)
	sent := 0
	for i := range rs {
		m, r := &q.wb.Msgs[i], &rs[i]
		if m.Err == nil {
			sent++
		} else {
			q.s.shard.Manager().Logger().Debug("nm: udp reply", "addr", q.s.local, "peer", r.to, "err", m.Err)
		}
		if r.done != nil {
			q.done = append(q.done, completion{r.done, core.MapError(m.Err)})
		}
		m.Buf, m.Err = nil, nil
	}
	q.s.stats.Sent.Add(int64(sent))
	q.s.stats.SendFailed.Add(int64(len(rs) - sent))
}

// release gives the slots of the flight back. Called with mu held.
func (q *replyQueue) release() {
	for i := range q.flight {
		r := &q.flight[i]
		if r.slot != nil {
			q.free = append(q.free, r.slot)
		}
		if r.big != nil {
			bigReplies.Put(r.big)
		}
	}
	q.alive -= len(q.flight)
	clear(q.flight)
	q.flight = q.flight[:0]
}

// complete hands SendAsync outcomes to the shard, which delivers them:
// never on the stack of the goroutine that flushed.
func (q *replyQueue) complete() {
	if len(q.done) == 0 {
		return
	}
	postCompletions(q.s.shard, slices.Clone(q.done))
	clear(q.done)
	q.done = q.done[:0]
}

// postCompletions delivers send outcomes from the shard's job loop (which
// waits for room in each done, as Manager.Complete does). Once the
// manager has closed, an outcome goes where there is room, or is logged.
func postCompletions(s *core.Shard, jobs []completion) {
	m := s.Manager()
	err := s.Post(func() {
		for _, c := range jobs {
			m.Complete(c.done, c.err)
		}
	})
	if err == nil {
		return
	}
	for _, c := range jobs {
		select {
		case c.done <- c.err:
		default:
			m.Logger().Warn("nm: send completion dropped: done channel full at shutdown")
		}
	}
}

// readerIdle is called by the reader before it reads: it flushes what the replies
// to the batches delivered so far left queued, and marks the reader idle.
func (q *replyQueue) readerIdle() {
	q.mu.Lock()
	if q.flushing || len(q.pending) == 0 {
		q.idle = true // a flusher running writes what is queued, to the end
		q.mu.Unlock()
		return
	}
	q.flushing = true
	q.mu.Unlock()
	q.flush(true)
}

// readerBusy is called by the reader when its read returns. It reports
// whether a Send woke it, in which case a deadline error is not one.
func (q *replyQueue) readerBusy() (poked bool) {
	q.mu.Lock()
	q.idle = false
	poked = q.poked
	if poked {
		q.poked = false
		// Under mu, so that a later poke's deadline in the past wins.
		q.s.conn.SetReadDeadline(time.Time{})
	}
	q.mu.Unlock()
	return poked
}

// readerGone is called when the reader has stopped for a drain while the
// socket stays open: from now on every Send flushes, and what is queued is
// written.
func (q *replyQueue) readerGone() { q.stop(false) }

// close is called when the reader has stopped on a closed socket: later
// Sends fail at once, and what is queued is written (and fails, counted).
func (q *replyQueue) close() { q.stop(true) }

// stop marks the reader gone (and the socket closed, if closed) and
// writes what is queued, unless a flusher runs, which writes it.
func (q *replyQueue) stop(closed bool) {
	q.mu.Lock()
	q.gone, q.idle = true, true
	q.closed = q.closed || closed
	if q.flushing || len(q.pending) == 0 {
		q.mu.Unlock()
		return
	}
	q.flushing = true
	q.mu.Unlock()
	q.flush(false)
}
