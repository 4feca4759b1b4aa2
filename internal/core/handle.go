package core

import (
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Socket is what a Handle asks of the socket it is bound to. Transports
// implement it (package nm for UDP, package stream for TCP and TLS, package
// dnsmsg for DoH and DoQ). Besides these methods, a socket implements
// Read(Handle) <-chan nm.Event, which package nm calls for Handle.Read, and
// may implement SetTimeouts(Handle, nm.Timeouts), SetReadTimeout(Handle,
// time.Duration) and SetKeepalive(Handle, bool).
type Socket interface {
	// Send hands a copy of b to h's output and returns without waiting
	// for the peer; the caller may reuse b at once.
	Send(h Handle, b []byte) error
	// SendAsync queues b itself for h and returns at once. Unless it
	// returns an error, done receives exactly one value, from the shard,
	// when b was written or failed.
	SendAsync(h Handle, b []byte, done chan<- error) error
	// ReadStop pauses reading.
	ReadStop(h Handle)
	// Close shuts h's conversation down; its final event comes later, from
	// the shard.
	Close(h Handle)
	// Released is called when h's last reference is detached. The socket
	// may put h back in its pool (see Handle.Reuse) or free it.
	Released(h Handle)
}

// Resetter is implemented by handle user values that want to be reset when
// their handle is released to its pool.
type Resetter interface{ Reset() }

// Handle is one conversation: a TCP or TLS connection, a (UDP socket, peer)
// pair, or one DoH stream. It is bound to one socket and one shard for its
// whole life. Handle is a small value: copies refer to the same
// conversation. The zero Handle refers to none.
//
// Handles are reference counted: the last Detach ends the conversation.
// Sockets reuse the state behind released handles for new conversations,
// so a Handle carries a generation: once the last reference is gone, every
// use of that Handle fails, even after its state serves another peer —
// Send, SendAsync and the others return ErrReleased, Read returns a channel
// whose only event is ErrReleased, the address methods return the zero
// value, Data returns nil, and Attach, Detach and SetData panic. A reply
// can never reach a peer it was not meant for. Methods are safe for
// concurrent use.
//
// Package nm's Handle is this type with the user's methods only; the
// transport-only methods here (Reuse, Free, Socket, Shard, SetProxied, Buf)
// are reachable only from the library's own packages.
type Handle struct {
	c   *conv
	gen uint32
}

// conv is the state behind handles, reused by sockets across
// conversations.
type conv struct {
	sock  Socket
	shard *Shard
	// state packs the generation (high 32 bits) and the reference count
	// (low 32 bits), so that a handle's generation and its references are
	// checked and changed in one atomic step.
	state atomic.Uint64
	local netip.AddrPort // as reported: a PROXY header's, or the socket's
	peer  netip.AddrPort
	// realLocal and realPeer are the socket's own addresses.
	realLocal, realPeer netip.AddrPort
	ifindex             int // interface a UDP request arrived on; 0 if unknown
	// meter counts the conversation (nil: its shard's own counters); lat,
	// if set, takes the time from born (a request's delivery, nanoseconds
	// since epoch) to its first reply.
	meter *Meter
	lat   *Latency
	born  atomic.Int64

	dataMu sync.Mutex
	data   any

	// buf is scratch space owned by the handle's socket, kept when the
	// state is reused: sockets read into it. Only the socket touches it.
	buf []byte
}

func pack(gen, refs uint32) uint64        { return uint64(gen)<<32 | uint64(refs) }
func unpack(st uint64) (gen, refs uint32) { return uint32(st >> 32), uint32(st) }

// NewHandle returns a handle with one reference, for socket implementations.
func NewHandle(s *Shard, sock Socket, local, peer netip.AddrPort) Handle {
	h := Handle{c: &conv{}}
	h.Reuse(s, sock, local, peer)
	return h
}

// Reuse readies the state behind a released handle for a new conversation
// with one reference and a new generation, keeping its user value and Buf;
// h becomes the new conversation's handle. For socket implementations.
func (h *Handle) Reuse(s *Shard, sock Socket, local, peer netip.AddrPort) {
	c := h.c
	c.shard, c.sock, c.local, c.peer = s, sock, local, peer
	c.realLocal, c.realPeer = local, peer
	c.ifindex = 0
	c.meter, c.lat = nil, nil
	c.born.Store(0)
	gen, _ := unpack(c.state.Load())
	gen++
	c.state.Store(pack(gen, 1))
	h.gen = gen
}

// IsZero reports whether h is the zero Handle.
func (h Handle) IsZero() bool { return h.c == nil }

// acquire takes a reference for the length of one call; false if h was
// released.
func (h Handle) acquire() bool {
	if h.c == nil {
		return false
	}
	for {
		st := h.c.state.Load()
		gen, refs := unpack(st)
		if gen != h.gen || refs == 0 {
			return false
		}
		if h.c.state.CompareAndSwap(st, st+1) {
			return true
		}
	}
}

// Attach adds a reference and returns h. It panics if h was released.
func (h Handle) Attach() Handle {
	if !h.acquire() {
		panic("nm: Attach on a released handle")
	}
	return h
}

// Detach drops a reference; the last one releases the handle. It panics if
// h was released (more Detach than Attach, or a Detach after the handle's
// state was reused).
func (h Handle) Detach() {
	if h.c == nil {
		panic("nm: Detach on the zero Handle")
	}
	for {
		st := h.c.state.Load()
		gen, refs := unpack(st)
		if gen != h.gen || refs == 0 {
			panic("nm: Detach on a released handle (more Detach than Attach)")
		}
		if h.c.state.CompareAndSwap(st, st-1) {
			if refs == 1 {
				// The socket may reuse the state in Released: what the
				// conversation counted on is taken first, and let go of
				// after, once the socket counted its last.
				mt, shard := h.c.meter, h.c.shard
				h.c.resetData()
				h.c.sock.Released(h)
				if mt != nil {
					mt.cells[shard.id].refs.Add(-1)
				}
			}
			return
		}
	}
}

// Refs returns the number of references, 0 once h was released; for tests
// and debugging.
func (h Handle) Refs() int {
	if h.c == nil {
		return 0
	}
	gen, refs := unpack(h.c.state.Load())
	if gen != h.gen {
		return 0
	}
	return int(refs)
}

// Shard returns the shard the handle belongs to.
func (h Handle) Shard() *Shard { return h.c.shard }

// LocalAddr returns the local address of the conversation: the
// destination a PROXY header gave, or else the socket's. It returns the
// zero value once h was released.
func (h Handle) LocalAddr() netip.AddrPort {
	if !h.acquire() {
		return netip.AddrPort{}
	}
	defer h.Detach()
	return h.c.local
}

// PeerAddr returns the peer's address: the source a PROXY header gave (the
// client behind a load balancer), or else the socket's. It returns the
// zero value once h was released.
func (h Handle) PeerAddr() netip.AddrPort {
	if !h.acquire() {
		return netip.AddrPort{}
	}
	defer h.Detach()
	return h.c.peer
}

// InterfaceIndex returns the index of the network interface a UDP request
// arrived on, or 0 if unknown (other transports, platforms that do not
// report it, or once h was released).
func (h Handle) InterfaceIndex() int {
	if !h.acquire() {
		return 0
	}
	defer h.Detach()
	return h.c.ifindex
}

// RealLocalAddr returns the socket's own local address (for a UDP request,
// the address the datagram was sent to: where the reply leaves from; the
// zero value once h was released).
func (h Handle) RealLocalAddr() netip.AddrPort {
	if !h.acquire() {
		return netip.AddrPort{}
	}
	defer h.Detach()
	return h.c.realLocal
}

// RealPeerAddr returns the socket's own peer address: with PROXY, the load
// balancer's (the zero value once h was released).
func (h Handle) RealPeerAddr() netip.AddrPort {
	if !h.acquire() {
		return netip.AddrPort{}
	}
	defer h.Detach()
	return h.c.realPeer
}

// SetProxied sets the addresses LocalAddr and PeerAddr report, as a PROXY
// header gave them; the real ones stay. For socket implementations, before
// the handle is handed out.
func (h Handle) SetProxied(local, peer netip.AddrPort) { h.c.local, h.c.peer = local, peer }

// SetData sets the handle's user value. When the handle is released, the
// value's Reset method, if it has one, is called, and the value stays with
// the handle's state for its next conversation; when the state is freed for
// good, the value's Close method, if it has one, is called. SetData panics
// if h was released.
func (h Handle) SetData(v any) {
	if !h.acquire() {
		panic("nm: SetData on a released handle")
	}
	defer h.Detach()
	h.c.dataMu.Lock()
	h.c.data = v
	h.c.dataMu.Unlock()
}

// Data returns the handle's user value, or nil (also once h was released).
func (h Handle) Data() any {
	if !h.acquire() {
		return nil
	}
	defer h.Detach()
	return h.c.loadData()
}

func (c *conv) loadData() any {
	c.dataMu.Lock()
	defer c.dataMu.Unlock()
	return c.data
}

// Send hands b to the conversation's output and returns: it never waits
// for the peer, whatever the peer does (SPEC: one conversation never holds
// another). b is copied and may be reused at once. Sends on one handle go
// out in the order they were made, batched with the replies ready at the
// same time. Send fails at once on a closed conversation (ErrClosed or
// ErrCanceled), when the conversation's bounded output is full
// (ErrOutputFull: a peer that does not read; on streams the conversation
// then ends), and once h was released (ErrReleased). A nil error means the
// bytes were queued, not that they were written: a write that fails later
// is counted (Counters.SendFailed, WriteTimeouts) and ends the
// conversation; use SendAsync to learn each outcome.
func (h Handle) Send(b []byte) error {
	if !h.acquire() {
		return ErrReleased
	}
	defer h.Detach()
	err := h.c.sock.Send(h, b)
	if err == nil && h.c.lat != nil {
		h.c.replied()
	}
	return err
}

// replied counts the time from the request's delivery to its first reply.
func (c *conv) replied() {
	if born := c.born.Swap(0); born != 0 {
		c.lat.Observe(time.Duration(sinceEpoch() - born))
	}
}

// epoch is the origin of the monotonic times kept in handles.
var epoch = time.Now()

// sinceEpoch returns monotonic nanoseconds, never 0.
func sinceEpoch() int64 { return int64(time.Since(epoch)) + 1 }

// SetMeter makes h's conversation count on mt (requests on a connection
// count on the connection's listener), which is not folded away while h is
// live. For transports, once, before h is handed out.
func (h Handle) SetMeter(mt *Meter) {
	if mt == nil || h.c.meter != nil {
		return
	}
	h.c.meter = mt
	mt.cells[h.c.shard.id].refs.Add(1)
}

// Meter returns what SetMeter set, or nil.
func (h Handle) Meter() *Meter { return h.c.meter }

// Measure starts the clock of a request: its first reply (Send or
// SendAsync) counts the time since in l. For transports, as the request
// is delivered.
func (h Handle) Measure(l *Latency) { h.MeasureFrom(l, Now()) }

// MeasureFrom is Measure from a time Now returned: one reading of the
// clock for a batch of requests read together.
func (h Handle) MeasureFrom(l *Latency, born int64) {
	h.c.lat = l
	h.c.born.Store(born)
}

// Now returns the monotonic time that MeasureFrom takes.
func Now() int64 { return sinceEpoch() }

// SendAsync queues b itself (no copy) after the sends before it and
// returns at once; b must not be modified until the send completes. If
// SendAsync returns nil, done receives exactly one value, delivered from
// the shard and never on the caller's stack: nil once b was handed to the
// kernel, or the error that stopped it (ErrCanceled when the handle closed
// first, ErrTimedOut when the peer did not take it within the write
// timeout). The library waits for room in done, so give it a buffer as
// large as the sends kept in flight, or drain it. If SendAsync returns an
// error (a closed handle, a full output, ErrReleased), done receives
// nothing.
func (h Handle) SendAsync(b []byte, done chan<- error) error {
	if !h.acquire() {
		return ErrReleased
	}
	defer h.Detach()
	err := h.c.sock.SendAsync(h, b, done)
	if err == nil && h.c.lat != nil {
		h.c.replied()
	}
	return err
}

// ReadStop pauses reading: no data event is delivered after it returns
// until Read is called again.
func (h Handle) ReadStop() {
	if h.acquire() {
		defer h.Detach()
		h.c.sock.ReadStop(h)
	}
}

// Close shuts the conversation down without waiting for the references to
// go; its final event, if it was read, comes from the shard. It does
// nothing once h was released.
func (h Handle) Close() {
	if h.acquire() {
		defer h.Detach()
		h.c.sock.Close(h)
	}
}

// socket returns the socket, or nil for the zero Handle.
func (h Handle) socket() Socket {
	if h.c == nil {
		return nil
	}
	return h.c.sock
}

// resetData calls the user value's Reset hook when the handle is released.
func (c *conv) resetData() {
	if r, ok := c.loadData().(Resetter); ok {
		r.Reset()
	}
}

// Socket returns the socket the handle is bound to, for transports.
func (h Handle) Socket() Socket { return h.socket() }

// Hold takes a reference for the length of one call and returns the socket,
// or nil if h was released; the caller Detaches when done. Package nm's
// Handle methods that dispatch to optional socket methods use it.
func (h Handle) Hold() Socket {
	if !h.acquire() {
		return nil
	}
	return h.c.sock
}

// Buf returns the handle's scratch space, kept with its state across
// conversations: only its socket reads into it. For transports.
func (h Handle) Buf() *[]byte { return &h.c.buf }

// SetInterface records the interface a UDP request arrived on. For
// transports, before the handle is handed out.
func (h Handle) SetInterface(ifindex int) { h.c.ifindex = ifindex }

// RealLocal returns the socket's own local address without taking a
// reference, for the socket that owns h while h is live.
func (h Handle) RealLocal() netip.AddrPort { return h.c.realLocal }

// RealPeer returns the socket's own peer address without taking a
// reference, for the socket that owns h while h is live.
func (h Handle) RealPeer() netip.AddrPort { return h.c.realPeer }

// Interface returns what SetInterface recorded, without taking a
// reference, for the socket that owns h.
func (h Handle) Interface() int { return h.c.ifindex }

// Free calls the user value's Close hook and drops the value: for socket
// implementations, when a released handle's state is freed for good.
func (h Handle) Free() { h.c.free() }

// free calls the user value's Close hook when the state is freed for good.
func (c *conv) free() {
	if cl, ok := c.loadData().(io.Closer); ok {
		cl.Close()
	}
	c.dataMu.Lock()
	c.data = nil
	c.dataMu.Unlock()
}

// HandlePool keeps the state of released handles of one socket for reuse,
// with its user value and Buf. For socket implementations. Its methods are
// safe for concurrent use.
type HandlePool struct {
	mu     sync.Mutex
	free   []*conv // guarded by mu
	closed bool    // guarded by mu; released handles are freed for good
	// Max bounds how many released handles the pool keeps; past it they
	// are freed. If zero, 1024.
	Max int
}

// Get returns a released handle to Reuse: a pooled one, or a new one.
func (p *HandlePool) Get() Handle {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		c := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return Handle{c: c}
	}
	p.mu.Unlock()
	return Handle{c: &conv{}}
}

// Put keeps the state of h, which was released, or frees it when the pool
// is full or closed.
func (p *HandlePool) Put(h Handle) {
	max := p.Max
	if max <= 0 {
		max = 1024
	}
	p.mu.Lock()
	if p.closed || len(p.free) >= max {
		p.mu.Unlock()
		h.c.free()
		return
	}
	p.free = append(p.free, h.c)
	p.mu.Unlock()
}

// Close frees every pooled handle and makes later Puts free theirs.
func (p *HandlePool) Close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range free {
		c.free()
	}
}
