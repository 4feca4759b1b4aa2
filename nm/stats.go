package nm

import (
	"cmp"
	"slices"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
)

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

// The library counts by the same numbers: these fail to compile if the
// two lists part.
const (
	_ = uint(numTransports) - uint(len(core.Stats{}))
	_ = uint(len(core.Stats{})) - uint(numTransports)
	_ = uint(QUIC) - uint(core.QUIC)
	_ = uint(core.QUIC) - uint(QUIC)
)

// Transports returns every transport counted, in order.
func Transports() []Transport {
	ts := make([]Transport, numTransports)
	for i := range ts {
		ts[i] = Transport(i)
	}
	return ts
}

func (t Transport) String() string { return core.Transport(t).String() }

// Totals are the statistics of one transport (on a manager, a shard, or
// one listener or client). Active is a gauge (sockets open now); the others
// only grow.
//
// Received and Sent count messages: DNS messages on the DNS listeners and
// clients, datagrams on raw UDP, data events on raw streams. Reads and
// Writes count the system calls that carried them, so Received/Reads and
// Sent/Writes are the messages carried per system call.
type Totals struct {
	Opened     int64 // sockets opened (listening sockets and client sockets)
	Closed     int64 // sockets closed
	BindFailed int64 // binds that failed
	Accepted   int64 // connections accepted
	Received   int64 // messages received
	Sent       int64 // messages sent
	Reads      int64 // read system calls that returned data (recvmmsg, read)
	Writes     int64 // write system calls (sendmmsg, sendmsg, writev, write)
	RecvFailed int64 // reads that failed
	SendFailed int64 // sends that failed
	Dropped    int64 // input dropped: malformed, oversized, unexpected, or no room in the queue

	// Conversations ended or input refused to protect the server, by reason.
	WriteTimeouts int64 // conversations cut off: the peer did not take a reply within the write timeout
	OutputFull    int64 // conversations cut off: their bounded output filled (a peer that does not read)
	Floods        int64 // connections cut off for flooding (resets, control frames, frames with no request)
	TooLarge      int64 // conversations cut off: buffered request bytes over the connection's or listener's cap
	Expired       int64 // requests reclaimed unanswered after the request timeout
	Shed          int64 // requests refused at once (REFUSED, SERVFAIL or 503) because consumers fell behind
	Refused       int64 // connections refused by admission control (per-address limits, rate, global cap)
	Panics        int64 // handler panics recovered (dnsmsg.Serve), each answered SERVFAIL

	Active int64 // sockets open now
}

// Stats is a snapshot of every transport's totals.
type Stats [numTransports]Totals

// Of returns the totals of one transport.
func (s Stats) Of(t Transport) Totals { return s[t] }

func statsOf(cs core.Stats) Stats {
	var s Stats
	for i := range cs {
		s[i] = Totals(cs[i])
	}
	return s
}

// Endpoint is the statistics of one listener, or of one upstream of a
// client (dnsmsg.Client), next to the per-transport totals of Stats.
type Endpoint struct {
	// ID tells endpoints apart: unique within the manager, and never
	// given to another endpoint once this one has closed.
	ID        uint64
	Transport Transport
	Role      string // "listener" or "client"
	// Name is the name given in the listener's or client's configuration;
	// for a listener without one, its address.
	Name string
	Addr string // the listener's address, or the upstream's
	Totals
	// Latency is, for a listener, the time from a request's delivery to
	// its first reply (Send); for a client, from a query's send to its
	// reply.
	Latency Histogram
}

// Endpoints returns the statistics of every listener and client upstream
// open, ordered by transport, role, name and address. A closed one's
// counts stay in Stats.
func (m *Manager) Endpoints() []Endpoint {
	es := m.core().Endpoints()
	out := make([]Endpoint, len(es))
	for i, e := range es {
		out[i] = Endpoint{ID: e.ID, Transport: Transport(e.Transport), Role: e.Role.String(), Name: e.Name, Addr: e.Addr,
			Totals: Totals(e.Totals), Latency: Histogram(e.Latency)}
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Transport, b.Transport), cmp.Compare(a.Role, b.Role),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Latency returns the latency histogram of transport t over every
// listener (role "listener") or every client upstream (role "client") of
// the manager, closed ones included.
func (m *Manager) Latency(t Transport, role string) Histogram {
	r := core.Listener
	if role == "client" {
		r = core.Client
	}
	return Histogram(m.core().LatencyOf(core.Transport(t), r))
}

// HistogramBuckets is the number of buckets of a Histogram.
const HistogramBuckets = core.LatencyBuckets

// Histogram is a snapshot of latencies. Counts[k] is the number of
// latencies at most HistogramBound(k) and above the bound before (the
// last bucket has no bound); Sum is their total. Observing one costs two
// atomic adds, no lock and no allocation.
type Histogram struct {
	Counts [HistogramBuckets]uint64
	Sum    time.Duration
}

// HistogramBound returns the upper bound of bucket k: 2^k µs (1 µs to
// about 4.2 s), or 0 for the last bucket, which has none.
func HistogramBound(k int) time.Duration { return core.LatencyBound(k) }

// Count returns the number of latencies counted.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}
