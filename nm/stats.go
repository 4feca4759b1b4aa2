package nm

import "sync/atomic"

// Transport names a kind of socket for statistics.
type Transport int

// The transports counted separately.
const (
	UDP Transport = iota
	TCP
	TLS
	HTTP
	numTransports
)

var transportNames = [numTransports]string{"udp", "tcp", "tls", "http"}

func (t Transport) String() string {
	if t < 0 || t >= numTransports {
		return "unknown"
	}
	return transportNames[t]
}

// Counters are the live statistics of one transport on one shard. All
// fields are safe for concurrent use. Active is a gauge (it goes down when a
// socket closes); the others only grow.
type Counters struct {
	Opened     atomic.Int64 // sockets opened (listening sockets and client sockets)
	Closed     atomic.Int64 // sockets closed
	BindFailed atomic.Int64 // binds that failed
	Accepted   atomic.Int64 // connections accepted
	Received   atomic.Int64 // messages (or datagrams, or chunks) received
	Sent       atomic.Int64 // messages sent
	RecvFailed atomic.Int64 // reads that failed
	SendFailed atomic.Int64 // sends that failed
	Dropped    atomic.Int64 // input dropped: malformed, oversized, unexpected, or no room in the queue
	Active     atomic.Int64 // sockets open now
	_          [48]byte     // keeps shards' counters on separate cache lines
}

// Totals is a snapshot of Counters.
type Totals struct {
	Opened, Closed, BindFailed, Accepted, Received, Sent int64
	RecvFailed, SendFailed, Dropped, Active              int64
}

func (c *Counters) snapshot() Totals {
	return Totals{
		Opened: c.Opened.Load(), Closed: c.Closed.Load(), BindFailed: c.BindFailed.Load(),
		Accepted: c.Accepted.Load(), Received: c.Received.Load(), Sent: c.Sent.Load(),
		RecvFailed: c.RecvFailed.Load(), SendFailed: c.SendFailed.Load(),
		Dropped: c.Dropped.Load(), Active: c.Active.Load(),
	}
}

func (t *Totals) add(o Totals) {
	t.Opened += o.Opened
	t.Closed += o.Closed
	t.BindFailed += o.BindFailed
	t.Accepted += o.Accepted
	t.Received += o.Received
	t.Sent += o.Sent
	t.RecvFailed += o.RecvFailed
	t.SendFailed += o.SendFailed
	t.Dropped += o.Dropped
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
