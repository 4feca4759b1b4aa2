package nm

import (
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Socket is what a Handle asks of the socket it is bound to. Transports
// implement it (package nm for UDP, package stream for TCP and TLS); users
// of the library never call it directly.
type Socket interface {
	// Send writes b for h. It returns when b was handed to the kernel or
	// failed; the caller may reuse b at once.
	Send(h *Handle, b []byte) error
	// SendAsync queues b for h and returns at once. Unless it returns an
	// error, done receives exactly one value when b was written or failed.
	SendAsync(h *Handle, b []byte, done chan<- error) error
	// Read starts reading and returns h's event channel.
	Read(h *Handle) <-chan Event
	// ReadStop pauses reading.
	ReadStop(h *Handle)
	// Close shuts h's conversation down; its final event comes later, from
	// the shard.
	Close(h *Handle)
	// Released is called when h's last reference is detached. The socket
	// may put h back in its pool (see Handle.Reuse) or free it.
	Released(h *Handle)
}

// Resetter is implemented by handle user values that want to be reset when
// their handle is released to its pool.
type Resetter interface{ Reset() }

// Handle is one conversation: a TCP or TLS connection, a (UDP socket, peer)
// pair, or one DoH stream. It is bound to one socket and one shard for its
// whole life.
//
// Handles are reference counted: the last Detach ends the conversation and
// returns the handle to its socket's pool. Attach after the last Detach, or
// a Detach too many, panics. Methods are safe for concurrent use.
type Handle struct {
	sock  Socket
	shard *Shard
	refs  atomic.Int32
	local netip.AddrPort // as reported: a PROXY header's, or the socket's
	peer  netip.AddrPort
	// realLocal and realPeer are the socket's own addresses.
	realLocal, realPeer netip.AddrPort

	dataMu sync.Mutex
	data   any

	// Buf is scratch space owned by the handle, kept when it is pooled:
	// sockets read into it. Only the socket touches it.
	Buf []byte
}

// NewHandle returns a handle with one reference, for socket implementations.
func NewHandle(s *Shard, sock Socket, local, peer netip.AddrPort) *Handle {
	h := &Handle{}
	h.Reuse(s, sock, local, peer)
	return h
}

// Reuse readies a released handle for a new conversation with one
// reference, keeping its user value and Buf. For socket implementations.
func (h *Handle) Reuse(s *Shard, sock Socket, local, peer netip.AddrPort) {
	h.shard, h.sock, h.local, h.peer = s, sock, local, peer
	h.realLocal, h.realPeer = local, peer
	h.refs.Store(1)
}

// Attach adds a reference and returns h. It panics if h was released.
func (h *Handle) Attach() *Handle {
	for {
		n := h.refs.Load()
		if n <= 0 {
			panic("nm: Attach on a released handle")
		}
		if h.refs.CompareAndSwap(n, n+1) {
			return h
		}
	}
}

// Detach drops a reference; the last one releases the handle. It panics if
// h has no reference left (more Detach than Attach).
func (h *Handle) Detach() {
	for {
		n := h.refs.Load()
		if n <= 0 {
			panic("nm: Detach on a released handle (more Detach than Attach)")
		}
		if h.refs.CompareAndSwap(n, n-1) {
			if n == 1 {
				h.sock.Released(h)
			}
			return
		}
	}
}

// Refs returns the number of references, for tests and debugging.
func (h *Handle) Refs() int { return int(h.refs.Load()) }

// Shard returns the shard the handle belongs to.
func (h *Handle) Shard() *Shard { return h.shard }

// LocalAddr returns the local address of the conversation: the
// destination a PROXY header gave, or else the socket's.
func (h *Handle) LocalAddr() netip.AddrPort { return h.local }

// PeerAddr returns the peer's address: the source a PROXY header gave (the
// client behind a load balancer), or else the socket's.
func (h *Handle) PeerAddr() netip.AddrPort { return h.peer }

// RealLocalAddr returns the socket's own local address.
func (h *Handle) RealLocalAddr() netip.AddrPort { return h.realLocal }

// RealPeerAddr returns the socket's own peer address: with PROXY, the load
// balancer's.
func (h *Handle) RealPeerAddr() netip.AddrPort { return h.realPeer }

// SetProxied sets the addresses LocalAddr and PeerAddr report, as a PROXY
// header gave them; the real ones stay. For socket implementations, before
// the handle is handed out.
func (h *Handle) SetProxied(local, peer netip.AddrPort) { h.local, h.peer = local, peer }

// SetData sets the handle's user value. When the handle is released, the
// value's Reset method, if it has one, is called, and the value stays with
// the handle for its next conversation; when the handle is freed for good,
// the value's Close method, if it has one, is called.
func (h *Handle) SetData(v any) {
	h.dataMu.Lock()
	h.data = v
	h.dataMu.Unlock()
}

// Data returns the handle's user value, or nil.
func (h *Handle) Data() any {
	h.dataMu.Lock()
	defer h.dataMu.Unlock()
	return h.data
}

// Send writes b on the conversation. It returns when b was handed to the
// kernel or failed; b may be reused at once. On a closed handle it fails
// at once.
func (h *Handle) Send(b []byte) error { return h.sock.Send(h, b) }

// SendAsync queues b after the sends before it and returns at once; b must
// not be modified until the send completes. If SendAsync returns nil, done
// receives exactly one value: nil once b was handed to the kernel, or the
// error that stopped it (ErrCanceled when the handle closed first). The
// library waits for room in done, so give it a buffer as large as the sends
// kept in flight, or drain it. If SendAsync returns an error (a closed
// handle, a full send queue), done receives nothing.
func (h *Handle) SendAsync(b []byte, done chan<- error) error {
	return h.sock.SendAsync(h, b, done)
}

// Read starts reading and returns the handle's event channel; calling it
// again returns the same channel. See Event for the channel's contract.
func (h *Handle) Read() <-chan Event { return h.sock.Read(h) }

// ReadStop pauses reading: no data event is delivered after it returns
// until Read is called again.
func (h *Handle) ReadStop() { h.sock.ReadStop(h) }

// Close shuts the conversation down without waiting for the references to
// go; its final event, if it was read, comes from the shard.
func (h *Handle) Close() { h.sock.Close(h) }

// NoTimeout, as the value of any timeout setting of the library, means no
// timeout at all. Zero means the setting's default (or, in SetTimeouts,
// the value in force).
const NoTimeout time.Duration = -1

// Timeouts of a conversation. As every timeout setting of the library, a
// zero field means the default: in a listener's or dialer's config, the
// transport's default for that timeout; in Handle.SetTimeouts, the value in
// force stays. A negative field (NoTimeout) means no timeout at all.
// Values read back (stream.Timeouts, Config.Resolved) are the ones in
// force, where zero means none.
type Timeouts struct {
	// Initial bounds, on servers, the time from accepting a connection to
	// its first data.
	Initial time.Duration
	// Idle bounds, on servers, the time between data events while reading.
	Idle time.Duration
	// Keepalive replaces Idle once the handle is marked with SetKeepalive.
	Keepalive time.Duration
	// Write bounds each send; a peer that does not read is reset.
	Write time.Duration
	// Read bounds, on clients, each read; it ends only that read.
	Read time.Duration
}

// SetTimeouts replaces the handle's timeouts, on sockets that have them;
// the others ignore it.
func (h *Handle) SetTimeouts(t Timeouts) {
	if s, ok := h.sock.(interface{ SetTimeouts(*Handle, Timeouts) }); ok {
		s.SetTimeouts(h, t)
	}
}

// SetReadTimeout sets the timeout of each read on client handles; zero
// means none. Other handles ignore it.
func (h *Handle) SetReadTimeout(d time.Duration) {
	if s, ok := h.sock.(interface {
		SetReadTimeout(*Handle, time.Duration)
	}); ok {
		s.SetReadTimeout(h, d)
	}
}

// SetKeepalive marks the conversation as kept alive (EDNS tcp-keepalive):
// its idle timeout becomes the keepalive timeout. Handles without timeouts
// ignore it.
func (h *Handle) SetKeepalive(on bool) {
	if s, ok := h.sock.(interface{ SetKeepalive(*Handle, bool) }); ok {
		s.SetKeepalive(h, on)
	}
}

// resetData calls the user value's Reset hook before the handle is pooled.
func (h *Handle) resetData() {
	if r, ok := h.Data().(Resetter); ok {
		r.Reset()
	}
}

// Socket returns the socket the handle is bound to, for transports.
func (h *Handle) Socket() Socket { return h.sock }

// Free calls the user value's Close hook and drops the value: for socket
// implementations, when a released handle is freed for good.
func (h *Handle) Free() { h.free() }

// free calls the user value's Close hook when the handle is freed for good.
func (h *Handle) free() {
	if c, ok := h.Data().(io.Closer); ok {
		c.Close()
	}
	h.SetData(nil)
}

// handlePool keeps released handles of one socket for reuse.
type handlePool struct {
	mu     sync.Mutex
	free   []*Handle // guarded by mu
	closed bool      // guarded by mu; released handles are freed for good
	max    int
}

func (p *handlePool) get() *Handle {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		h := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return h
	}
	p.mu.Unlock()
	return &Handle{}
}

// put resets h and keeps it, or frees it when the pool is full or closed.
func (p *handlePool) put(h *Handle) {
	h.resetData()
	p.mu.Lock()
	if p.closed || len(p.free) >= p.max {
		p.mu.Unlock()
		h.free()
		return
	}
	p.free = append(p.free, h)
	p.mu.Unlock()
}

// close frees every pooled handle and makes later puts free theirs.
func (p *handlePool) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, h := range free {
		h.free()
	}
}
