package core

import "sync/atomic"

// Transport names a kind of socket for statistics.
type Transport int

// The transports counted separately.
const (
	UDP Transport = iota
	TCP
	TLS
	HTTP
	QUIC // DNS over QUIC
	numTransports
)

var transportNames = [numTransports]string{"udp", "tcp", "tls", "http", "quic"}

// Transports returns every transport counted, in order.
func Transports() []Transport {
	ts := make([]Transport, numTransports)
	for i := range ts {
		ts[i] = Transport(i)
	}
	return ts
}

func (t Transport) String() string {
	if t < 0 || t >= numTransports {
		return "unknown"
	}
	return transportNames[t]
}

// Counters are the live statistics of one transport on one shard. All
// fields are safe for concurrent use. Active is a gauge (it goes down when a
// socket closes); the others only grow.
//
// Received and Sent count messages: DNS messages on the DNS listeners and
// clients, datagrams on raw UDP, data events on raw streams. Reads and
// Writes count the system calls that carried them, so Received/Reads and
// Sent/Writes are the messages carried per system call.
type Counters struct {
	Opened     atomic.Int64 // sockets opened (listening sockets and client sockets)
	Closed     atomic.Int64 // sockets closed
	BindFailed atomic.Int64 // binds that failed
	Accepted   atomic.Int64 // connections accepted
	Received   atomic.Int64 // messages received
	Sent       atomic.Int64 // messages sent
	Reads      atomic.Int64 // read system calls that returned data (recvmmsg, read)
	Writes     atomic.Int64 // write system calls (sendmmsg, sendmsg, writev, write)
	RecvFailed atomic.Int64 // reads that failed
	SendFailed atomic.Int64 // sends that failed
	Dropped    atomic.Int64 // input dropped: malformed, oversized, unexpected, or no room in the queue

	// Conversations ended or input refused to protect the server, by reason.
	WriteTimeouts atomic.Int64 // conversations cut off: the peer did not take a reply within the write timeout
	OutputFull    atomic.Int64 // conversations cut off: their bounded output filled (a peer that does not read)
	Floods        atomic.Int64 // connections cut off for flooding (resets, control frames, frames with no request)
	TooLarge      atomic.Int64 // conversations cut off: buffered request bytes over the connection's or listener's cap
	Expired       atomic.Int64 // requests reclaimed unanswered after the request timeout
	Shed          atomic.Int64 // requests refused at once (REFUSED, SERVFAIL or 503) because consumers fell behind
	Refused       atomic.Int64 // connections refused by admission control (per-address limits, rate, global cap)
	Panics        atomic.Int64 // handler panics recovered (dnsmsg.Serve), each answered SERVFAIL

	Active atomic.Int64 // sockets open now
	_      [48]byte     // keeps shards' counters on separate cache lines
}

// Totals is a snapshot of Counters.
type Totals struct {
	Opened, Closed, BindFailed, Accepted, Received, Sent int64
	Reads, Writes, RecvFailed, SendFailed, Dropped       int64
	WriteTimeouts, OutputFull, Floods, TooLarge          int64
	Expired, Shed, Refused, Panics                       int64
	Active                                               int64
}

func (c *Counters) snapshot() Totals {
	return Totals{
		Opened: c.Opened.Load(), Closed: c.Closed.Load(), BindFailed: c.BindFailed.Load(),
		Accepted: c.Accepted.Load(), Received: c.Received.Load(), Sent: c.Sent.Load(),
		Reads: c.Reads.Load(), Writes: c.Writes.Load(),
		RecvFailed: c.RecvFailed.Load(), SendFailed: c.SendFailed.Load(),
		Dropped:       c.Dropped.Load(),
		WriteTimeouts: c.WriteTimeouts.Load(), OutputFull: c.OutputFull.Load(),
		Floods: c.Floods.Load(), TooLarge: c.TooLarge.Load(),
		Expired: c.Expired.Load(), Shed: c.Shed.Load(), Refused: c.Refused.Load(), Panics: c.Panics.Load(),
		Active: c.Active.Load(),
	}
}

func (t *Totals) add(o Totals) {
	t.Opened += o.Opened
	t.Closed += o.Closed
	t.BindFailed += o.BindFailed
	t.Accepted += o.Accepted
	t.Received += o.Received
	t.Sent += o.Sent
	t.Reads += o.Reads
	t.Writes += o.Writes
	t.RecvFailed += o.RecvFailed
	t.SendFailed += o.SendFailed
	t.Dropped += o.Dropped
	t.WriteTimeouts += o.WriteTimeouts
	t.OutputFull += o.OutputFull
	t.Floods += o.Floods
	t.TooLarge += o.TooLarge
	t.Expired += o.Expired
	t.Shed += o.Shed
	t.Refused += o.Refused
	t.Panics += o.Panics
	t.Active += o.Active
}

// Stats is a snapshot of every transport's counters.
type Stats [numTransports]Totals

// Of returns the totals of one transport.
func (s Stats) Of(t Transport) Totals { return s[t] }

func (s *Stats) add(o *Stats) {
	for i := range s {
		s[i].add(o[i])
	}
}
