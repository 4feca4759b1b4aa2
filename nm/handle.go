package nm

import (
	"net/netip"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
)

// Handle is one conversation: a TCP or TLS connection, a (UDP socket, peer)
// pair, one DoH stream or one DoQ stream. It is bound to one socket and one
// shard for its whole life. Handle is a small value: copies refer to the
// same conversation. The zero Handle refers to none.
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
type Handle core.Handle

func (h Handle) core() core.Handle { return core.Handle(h) }

// Resetter is implemented by handle user values that want to be reset when
// their handle is released to its pool.
type Resetter interface{ Reset() }

// IsZero reports whether h is the zero Handle.
func (h Handle) IsZero() bool { return h.core().IsZero() }

// Attach adds a reference and returns h. It panics if h was released.
func (h Handle) Attach() Handle { return Handle(h.core().Attach()) }

// Detach drops a reference; the last one releases the handle. It panics if
// h was released (more Detach than Attach, or a Detach after the handle's
// state was reused).
func (h Handle) Detach() { h.core().Detach() }

// LocalAddr returns the local address of the conversation: the
// destination a PROXY header gave, or else the socket's. It returns the
// zero value once h was released.
func (h Handle) LocalAddr() netip.AddrPort { return h.core().LocalAddr() }

// PeerAddr returns the peer's address: the source a PROXY header gave (the
// client behind a load balancer), or else the socket's. It returns the
// zero value once h was released.
func (h Handle) PeerAddr() netip.AddrPort { return h.core().PeerAddr() }

// InterfaceIndex returns the index of the network interface a UDP request
// arrived on, or 0 if unknown (other transports, platforms that do not
// report it, or once h was released).
func (h Handle) InterfaceIndex() int { return h.core().InterfaceIndex() }

// RealLocalAddr returns the socket's own local address (for a UDP request,
// the address the datagram was sent to: where the reply leaves from; the
// zero value once h was released).
func (h Handle) RealLocalAddr() netip.AddrPort { return h.core().RealLocalAddr() }

// RealPeerAddr returns the socket's own peer address: with PROXY, the load
// balancer's (the zero value once h was released).
func (h Handle) RealPeerAddr() netip.AddrPort { return h.core().RealPeerAddr() }

// SetData sets the handle's user value. When the handle is released, the
// value's Reset method (Resetter), if it has one, is called, and the value
// stays with the handle's state for its next conversation; when the state
// is freed for good, the value's Close method, if it has one, is called.
// SetData panics if h was released.
func (h Handle) SetData(v any) { h.core().SetData(v) }

// Data returns the handle's user value, or nil (also once h was released).
func (h Handle) Data() any { return h.core().Data() }

// Send hands b to the conversation's output and returns: it never waits
// for the peer, whatever the peer does (one conversation never holds
// another). b is copied and may be reused at once. Sends on one handle go
// out in the order they were made, batched with the replies ready at the
// same time. Send fails at once on a closed conversation (ErrClosed or
// ErrCanceled), when the conversation's bounded output is full
// (ErrOutputFull: a peer that does not read; on streams the conversation
// then ends), and once h was released (ErrReleased). A nil error means the
// bytes were queued, not that they were written: a write that fails later
// is counted (Totals.SendFailed, WriteTimeouts) and ends the
// conversation; use SendAsync to learn each outcome.
func (h Handle) Send(b []byte) error { return h.core().Send(b) }

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
	return h.core().SendAsync(b, done)
}

// reader is what every socket implements besides core.Socket.
type reader interface {
	Read(h core.Handle) <-chan Event
}

// Read starts reading and returns the handle's event channel; calling it
// again returns the same channel. See Event for the channel's contract.
// Once h was released, Read returns a channel whose only event is
// ErrReleased.
func (h Handle) Read() <-chan Event {
	c := h.core()
	sock := c.Hold()
	if sock == nil {
		return released
	}
	defer c.Detach()
	if r, ok := sock.(reader); ok {
		return r.Read(c)
	}
	return unreadable
}

// unreadable is the event channel of handles whose socket cannot read.
var unreadable = func() chan Event {
	ch := make(chan Event, 1)
	ch <- Event{Err: ErrNotSupported}
	close(ch)
	return ch
}()

// released is the event channel of released handles.
var released = func() chan Event {
	ch := make(chan Event, 1)
	ch <- Event{Err: ErrReleased}
	close(ch)
	return ch
}()

// ReadStop pauses reading: no data event is delivered after it returns
// until Read is called again.
func (h Handle) ReadStop() { h.core().ReadStop() }

// Close shuts the conversation down without waiting for the references to
// go; its final event, if it was read, comes from the shard. It does
// nothing once h was released.
func (h Handle) Close() { h.core().Close() }

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
func (h Handle) SetTimeouts(t Timeouts) {
	c := h.core()
	if sock := c.Hold(); sock != nil {
		defer c.Detach()
		if s, ok := sock.(interface{ SetTimeouts(core.Handle, Timeouts) }); ok {
			s.SetTimeouts(c, t)
		}
	}
}

// SetReadTimeout sets the timeout of each read on client handles: a read
// armed now times out d from now, later ones d after they are armed. Zero
// means the handle's default, which for nm's own UDP clients is none;
// NoTimeout means none. Other handles ignore it.
func (h Handle) SetReadTimeout(d time.Duration) {
	c := h.core()
	if sock := c.Hold(); sock != nil {
		defer c.Detach()
		if s, ok := sock.(interface {
			SetReadTimeout(core.Handle, time.Duration)
		}); ok {
			s.SetReadTimeout(c, d)
		}
	}
}

// SetKeepalive marks the conversation as kept alive (EDNS tcp-keepalive):
// its idle timeout becomes the keepalive timeout. Handles without timeouts
// ignore it.
func (h Handle) SetKeepalive(on bool) {
	c := h.core()
	if sock := c.Hold(); sock != nil {
		defer c.Detach()
		if s, ok := sock.(interface{ SetKeepalive(core.Handle, bool) }); ok {
			s.SetKeepalive(c, on)
		}
	}
}
