package core

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Role says whom a Meter counts for.
type Role uint8

// The roles of meters.
const (
	Listener Role = iota + 1 // a listener: latency is from a request's delivery to its reply
	Client                   // a client: latency is from a query's send to its reply
)

func (r Role) String() string {
	if r == Client {
		return "client"
	}
	return "listener"
}

// Meter is the counters and latencies of one listener or one client
// upstream, one cell per shard so that shards never share a cache line.
// The manager's totals (Shard.Stats, Manager.Stats) add up the shard's
// own counters (Shard.Counters: sockets without a meter of their own) and
// every meter's. A closed meter is folded into the shards' own counters
// once nothing can count on it any more: no socket of it open (Active)
// and no handle bound to it (SetMeter) left; so totals never go down and
// no count is lost.
type Meter struct {
	m     *Manager
	id    uint64 // unique in the manager, never reused
	t     Transport
	role  Role
	name  string
	addr  string
	cells []meterCell
}

type meterCell struct {
	Counters
	lat Latency
	// refs counts the handles of the shard bound to the meter (SetMeter)
	// and not yet released.
	refs atomic.Int64
	_    [meterCellPad]byte
}

// meterCellPad rounds a cell up to whole cache lines.
const meterCellPad = (64 - (unsafe.Sizeof(Counters{})+unsafe.Sizeof(Latency{})+8)%64) % 64

// Cells must be whole cache lines (this fails to compile otherwise).
var _ [0]struct{} = [unsafe.Sizeof(meterCell{}) % 64]struct{}{}

// NewMeter registers a meter of transport t for role, named name (the
// address when empty).
func (m *Manager) NewMeter(t Transport, role Role, name, addr string) *Meter {
	if name == "" {
		name = addr
	}
	mt := &Meter{m: m, t: t, role: role, name: name, addr: addr, cells: make([]meterCell, len(m.shards))}
	m.meterMu.Lock()
	m.lastID++
	mt.id = m.lastID
	m.meters[mt] = struct{}{}
	m.foldQuiet()
	m.meterMu.Unlock()
	return mt
}

// SetAddr sets the meter's address once it is known (after a bind), and
// its name too when none was given.
func (mt *Meter) SetAddr(addr string) {
	mt.m.meterMu.Lock()
	if mt.name == "" || mt.name == mt.addr {
		mt.name = addr
	}
	mt.addr = addr
	mt.m.meterMu.Unlock()
}

// On returns the meter's live counters on shard s.
func (mt *Meter) On(s *Shard) *Counters { return &mt.cells[s.id].Counters }

// CountersOf returns the counters of shard s to count on: meter mt's,
// or, when mt is nil, the shard's own of transport t.
func CountersOf(mt *Meter, s *Shard, t Transport) *Counters {
	if mt != nil {
		return mt.On(s)
	}
	return s.Counters(t)
}

// Latency returns the meter's latency histogram on shard s.
func (mt *Meter) Latency(s *Shard) *Latency { return &mt.cells[s.id].lat }

// Transport returns the meter's transport.
func (mt *Meter) Transport() Transport { return mt.t }

// Close retires the meter: it leaves the manager's list of endpoints, and
// its counts are folded into the shards' own once nothing can count on it.
// Counting on it after Close is allowed (a conversation that outlives its
// listener) until then.
func (mt *Meter) Close() {
	m := mt.m
	m.meterMu.Lock()
	if _, ok := m.meters[mt]; ok {
		delete(m.meters, mt)
		m.retired = append(m.retired, mt)
	}
	m.foldQuiet()
	m.meterMu.Unlock()
}

// quiet reports whether nothing can count on the meter any more: no
// socket of it open, no handle bound to it.
func (mt *Meter) quiet() bool {
	for i := range mt.cells {
		if mt.cells[i].refs.Load() != 0 {
			return false
		}
	}
	return mt.totals().Active == 0
}

// Totals returns a snapshot of the meter's counters, added up over the
// shards.
func (mt *Meter) Totals() Totals { return mt.totals() }

func (mt *Meter) totals() Totals {
	var t Totals
	for i := range mt.cells {
		t.add(mt.cells[i].snapshot())
	}
	return t
}

// EndpointStats is a snapshot of one meter.
type EndpointStats struct {
	ID         uint64
	Transport  Transport
	Role       Role
	Name, Addr string
	Totals     Totals
	Latency    LatencySnapshot
}

// Endpoints returns a snapshot of every meter not closed.
func (m *Manager) Endpoints() []EndpointStats {
	m.meterMu.Lock()
	defer m.meterMu.Unlock()
	out := make([]EndpointStats, 0, len(m.meters))
	for mt := range m.meters {
		out = append(out, EndpointStats{ID: mt.id, Transport: mt.t, Role: mt.role, Name: mt.name, Addr: mt.addr,
			Totals: mt.totals(), Latency: mt.latency()})
	}
	return out
}

// foldQuiet folds the closed meters that nothing can count on any more
// into the shards' own counters. Called with meterMu held, whenever a
// meter is made or closed and when stats are read, so that closed meters
// do not pile up.
func (m *Manager) foldQuiet() {
	keep := m.retired[:0]
	for _, mt := range m.retired {
		if !mt.quiet() {
			keep = append(keep, mt)
			continue
		}
		for i := range mt.cells {
			m.shards[i].counters[mt.t].fold(mt.cells[i].snapshot())
			m.shards[i].lat[mt.role-1][mt.t].fold(&mt.cells[i].lat)
		}
	}
	clear(m.retired[len(keep):])
	m.retired = keep
}

// shardStats returns shard s's totals: its own counters and every meter's
// cell on s.
func (m *Manager) shardStats(s *Shard) Stats {
	m.meterMu.Lock()
	defer m.meterMu.Unlock()
	m.foldQuiet()
	return m.shardStatsLocked(s)
}

// shardStatsLocked is shardStats with meterMu held: no meter is folded
// while the shard's own counters and the meters' are read.
func (m *Manager) shardStatsLocked(s *Shard) Stats {
	var st Stats
	for i := range st {
		st[i] = s.counters[i].snapshot()
	}
	for mt := range m.allMeters {
		st[mt.t].add(mt.cells[s.id].snapshot())
	}
	return st
}

// allMeters yields every meter counted in the totals: the open ones and
// the closed ones not yet folded. Called with meterMu held.
func (m *Manager) allMeters(yield func(*Meter) bool) {
	for mt := range m.meters {
		if !yield(mt) {
			return
		}
	}
	for _, mt := range m.retired {
		if !yield(mt) {
			return
		}
	}
}

// latency returns the meter's latencies, added up over the shards.
func (mt *Meter) latency() LatencySnapshot {
	var l LatencySnapshot
	for i := range mt.cells {
		l.add(&mt.cells[i].lat)
	}
	return l
}

// LatencyOf returns the latency histogram of transport t for role, added
// up over every shard and meter, closed ones included.
func (m *Manager) LatencyOf(t Transport, role Role) LatencySnapshot {
	var l LatencySnapshot
	m.meterMu.Lock()
	defer m.meterMu.Unlock()
	for _, s := range m.shards {
		l.add(&s.lat[role-1][t])
	}
	for mt := range m.allMeters {
		if mt.t == t && mt.role == role {
			l.addSnapshot(mt.latency())
		}
	}
	return l
}

// fold adds a snapshot into live counters.
func (c *Counters) fold(t Totals) {
	c.Opened.Add(t.Opened)
	c.Closed.Add(t.Closed)
	c.BindFailed.Add(t.BindFailed)
	c.Accepted.Add(t.Accepted)
	c.Received.Add(t.Received)
	c.Sent.Add(t.Sent)
	c.Reads.Add(t.Reads)
	c.Writes.Add(t.Writes)
	c.RecvFailed.Add(t.RecvFailed)
	c.SendFailed.Add(t.SendFailed)
	c.Dropped.Add(t.Dropped)
	c.WriteTimeouts.Add(t.WriteTimeouts)
	c.OutputFull.Add(t.OutputFull)
	c.Floods.Add(t.Floods)
	c.TooLarge.Add(t.TooLarge)
	c.Expired.Add(t.Expired)
	c.Shed.Add(t.Shed)
	c.Refused.Add(t.Refused)
	c.Panics.Add(t.Panics)
	c.Active.Add(t.Active)
}

// LatencyBuckets is the number of buckets of a latency histogram: bucket
// k < LatencyBuckets-1 counts the latencies at most 2^k µs (and more than
// the bound of bucket k-1); the last counts the rest.
const LatencyBuckets = 24

// LatencyBound returns the upper bound of bucket k, or 0 for the last
// (no bound).
func LatencyBound(k int) time.Duration {
	if k >= LatencyBuckets-1 {
		return 0
	}
	return time.Microsecond << k
}

// Latency is a live histogram of latencies: one atomic add per bucket and
// one for the sum, no lock, no allocation.
type Latency struct {
	counts [LatencyBuckets]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// Observe counts one latency.
func (l *Latency) Observe(d time.Duration) {
	// Bucket k holds (2^(k-1) µs, 2^k µs]: the smallest k with d at most
	// 2^k µs, from d in whole microseconds rounded up.
	k := LatencyBuckets - 1
	if us := (uint64(max(d, 0)) + 999) / 1000; us <= 1 {
		k = 0
	} else if n := bits.Len64(us - 1); n < k {
		k = n
	}
	l.counts[k].Add(1)
	l.sum.Add(int64(d))
}

func (l *Latency) fold(o *Latency) {
	for i := range l.counts {
		l.counts[i].Add(o.counts[i].Load())
	}
	l.sum.Add(o.sum.Load())
}

// LatencySnapshot is a snapshot of a Latency: Counts per bucket (not
// cumulative) and the sum of the latencies counted.
type LatencySnapshot struct {
	Counts [LatencyBuckets]uint64
	Sum    time.Duration
}

func (s *LatencySnapshot) addSnapshot(o LatencySnapshot) {
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Sum += o.Sum
}

func (s *LatencySnapshot) add(l *Latency) {
	for i := range s.Counts {
		s.Counts[i] += l.counts[i].Load()
	}
	s.Sum += time.Duration(l.sum.Load())
}

// meterReg is the manager's registry of meters.
type meterReg struct {
	meterMu sync.Mutex
	meters  map[*Meter]struct{} // not closed; guarded by meterMu
	retired []*Meter            // closed, not yet folded; guarded by meterMu
	lastID  uint64              // the ID of the meter made last; guarded by meterMu
}

type meterKey struct{}

// WithMeter returns ctx carrying mt, for a listener or dialer of another
// package that must count on a meter its caller owns (DNS over TCP on a
// stream listener, a client's upstream).
func WithMeter(ctx context.Context, mt *Meter) context.Context {
	return context.WithValue(ctx, meterKey{}, mt)
}

// MeterFrom returns the meter ctx carries, or nil.
func MeterFrom(ctx context.Context) *Meter {
	mt, _ := ctx.Value(meterKey{}).(*Meter)
	return mt
}
