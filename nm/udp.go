package nm

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// Defaults of UDPConfig.
const (
	DefaultUDPListenSize = 4096
	DefaultUDPClientSize = 65535
	DefaultUDPBatch      = 32
	DefaultUDPQueue      = 1024
	DefaultUDPReplies    = 1024
)

// UDPConfig configures a UDP listener or client. The zero value is ready
// to use. A config must not be modified after use.
type UDPConfig struct {
	// MaxSize is the largest datagram delivered; longer ones are dropped and
	// counted. If zero, 4096 bytes for listeners and 65535 for clients.
	MaxSize int
	// Batch is how many datagrams a listener reads per system call, and
	// how many replies it queues at most before a Send writes them (see
	// UDPListener). If zero, 32.
	Batch int
	// Queue is the capacity of a listener's event channel. When it is full,
	// new datagrams are dropped and counted: UDP ingress never waits for a
	// slow consumer. If zero, 1024 per shard.
	Queue int
	// Replies bounds, per listening socket, the replies queued or being
	// written. When it is reached, Send drops the reply, counts it in
	// SendFailed and returns ErrOutputFull: a UDP reply never waits. It
	// should cover the replies made while a write is held up (the writing
	// goroutine can lose its CPU in the system call). If zero, 1024.
	Replies int
	// Filter, if set, is called on the shard for each datagram before it
	// is delivered; a non-nil error drops it and counts it. It must not
	// keep b, and must be safe for concurrent use.
	Filter func(b []byte, peer netip.AddrPort) error
	// Proxy, if set, makes a listener expect a PROXY protocol v2 header in
	// front of every datagram, from the peers the policy allows: the
	// header is stripped, and the handle's PeerAddr and LocalAddr are its
	// addresses (RealPeerAddr, where replies go, is the proxy's). A
	// datagram without a valid header, or from a peer not allowed, is
	// dropped and counted. The filter sees the payload and the header's
	// source.
	Proxy *proxyproto.Policy
	// ProxyHeader, on clients, is sent in front of every datagram (see
	// proxyproto.Header.Append).
	ProxyHeader []byte
	// Socket says how a listener binds: address family, port sharing,
	// socket options. The zero value binds the address as written and
	// refuses an address another socket holds (see SocketConfig).
	Socket SocketConfig
	// Name names a listener in its statistics (Manager.Endpoints). If
	// empty, its address.
	Name string
}

func (c *UDPConfig) maxSize(def int) int {
	if c.MaxSize > 0 {
		return min(c.MaxSize, 65535)
	}
	return def
}

func (c *UDPConfig) batch() int {
	if c.Batch > 0 {
		return c.Batch
	}
	return DefaultUDPBatch
}

func (c *UDPConfig) replies() int {
	if c.Replies > 0 {
		return c.Replies
	}
	return DefaultUDPReplies
}

// UDPListener is a UDP server: one socket per shard bound to one address
// (shared by the shards where the platform cannot spread traffic over
// several, see Platforms).
// Every datagram arrives as an Event on Datagrams, with a handle to reply
// on. Its methods are safe for concurrent use.
//
// Replies leave in batches and Send never waits. A request handle's Send
// copies the reply into its socket's reply queue and returns (SendAsync
// queues b itself and reports the outcome on done, from the shard). The
// queue is written with one sendmmsg when a Send finds no other request
// waiting on Datagrams (so at low load every reply leaves at once), when it
// holds Batch replies, and by the socket's reader after each batch of
// requests it delivered. A reply waits at most until the reader has
// delivered the batch in hand or has the CPU to flush it, never for
// another request's processing; no timer is involved. Replies leave from
// the address the request came to. The outcome of each write is counted:
// Sent, SendFailed, and Writes (system calls).
type UDPListener struct {
	m    *Manager
	cfg  UDPConfig
	addr netip.AddrPort
	// ch carries requests to the consumer. Senders: the readers, with
	// non-blocking sends. The last reader to end sends the final event and
	// closes it.
	ch      chan Event
	socks   []*udpListenSocket
	running atomic.Int32 // readers still running
	once    sync.Once
	untrack func()
	meter   *core.Meter
	undrain func()
	// draining is set by Shutdown: readers stop, and Released wakes
	// Shutdown (drained, buffer 1, non-blocking sends) when a socket has no
	// request left in flight.
	draining atomic.Bool
	drained  chan struct{}
}

type udpListenSocket struct {
	l     *UDPListener
	shard *core.Shard
	conn  *net.UDPConn
	local netip.AddrPort
	batch *transport.Batch
	out   *replyQueue // replies, until they are written (udp_send.go)
	pool  core.HandlePool
	stats *core.Counters
	lat   *core.Latency
	// readAt is when the batch being delivered was read (core.Now): the
	// start of its requests' latencies. Only the reader touches it.
	readAt int64
	// inFlight counts the requests delivered and not yet released.
	inFlight atomic.Int64
}

// ListenUDP binds addr on every shard of m and starts reading. ctx bounds
// the binding only. It fails with an error matching syscall.EADDRINUSE if
// another socket holds addr, unless cfg.Socket.SharePort; with
// cfg.Socket.PacketConns it serves those sockets and ignores addr.
func ListenUDP(ctx context.Context, m *Manager, addr string, cfg UDPConfig) (*UDPListener, error) {
	cm := m.core()
	conns, err := transport.ListenUDP(ctx, addr, m.Workers(), transport.ListenConfig(cfg.Socket))
	if err != nil {
		cm.Shard(0).Counters(core.UDP).BindFailed.Add(1)
		cm.Logger().Warn("nm: cannot listen", "transport", UDP.String(), "addr", addr, "err", err)
		return nil, err
	}
	if k := len(cfg.Socket.PacketConns); k > 0 && k < m.Workers() {
		cm.Logger().Info("nm: shards share the UDP sockets given", "sockets", k, "shards", m.Workers(), "addr", conns[0].LocalAddr())
	}
	queue := cfg.Queue
	if queue <= 0 {
		queue = DefaultUDPQueue * len(conns)
	}
	l := &UDPListener{m: m, cfg: cfg, ch: make(chan Event, queue), drained: make(chan struct{}, 1)}
	l.addr = transport.AddrPort(conns[0].LocalAddr())
	l.meter = cm.NewMeter(core.UDP, core.Listener, cfg.Name, l.addr.String())
	size := cfg.maxSize(DefaultUDPListenSize)
	for i, c := range conns {
		s := &udpListenSocket{l: l, shard: cm.Shard(i % cm.Workers()), conn: c, local: transport.AddrPort(c.LocalAddr())}
		s.pool.Max = queue
		s.stats = l.meter.On(s.shard)
		s.lat = l.meter.Latency(s.shard)
		if s.batch, err = transport.NewBatch(c, cfg.batch(), size); err == nil {
			s.out, err = newReplyQueue(s, cfg.batch(), cfg.replies())
		}
		if err != nil {
			l.meter.Close()
			transportClose(conns)
			return nil, err
		}
		l.socks = append(l.socks, s)
	}
	l.undrain = cm.TrackDrain(l.Shutdown) // before Track: Close may run from then on
	if l.untrack, err = cm.Track(func() { l.Close() }); err != nil {
		l.undrain()
		l.meter.Close()
		transportClose(conns)
		return nil, err
	}
	l.running.Store(int32(len(l.socks)))
	for _, s := range l.socks {
		s.stats.Opened.Add(1)
		s.stats.Active.Add(1)
		if err := cm.Go(s.readLoop); err != nil {
			s.conn.Close()
			s.end()
		}
	}
	return l, nil
}

func transportClose(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// Addr returns the bound address.
func (l *UDPListener) Addr() netip.AddrPort { return l.addr }

// Datagrams returns the listener's event channel: one event per datagram,
// then, once the listener is closed, one final event with ErrCanceled; then
// it is closed. The receiver owns one reference to each event's handle.
func (l *UDPListener) Datagrams() <-chan Event { return l.ch }

// Close stops the listener at once: its sockets close, and replies not yet
// sent fail. Its final event comes from the shards once every reader has
// stopped. Close does not wait for that and is idempotent.
func (l *UDPListener) Close() error {
	l.once.Do(func() {
		for _, s := range l.socks {
			s.conn.Close()
			s.out.close() // Sends fail at once from now on
		}
		l.untrack()
		l.undrain()
		l.meter.Close()
	})
	return nil
}

// Stats returns the listener's statistics.
func (l *UDPListener) Stats() Totals { return Totals(l.meter.Totals()) }

// Shutdown drains the listener: its readers stop (datagrams that arrive
// from now on are left to the kernel and lost at Close), the final event
// follows on Datagrams, and the requests already delivered can still be
// answered from their sockets until each is released; then the listener
// closes. If ctx ends first, Shutdown closes it at once and returns ctx's
// error; otherwise nil.
func (l *UDPListener) Shutdown(ctx context.Context) (err error) {
	if !l.draining.Swap(true) {
		start := time.Now()
		l.m.core().Logger().Info("nm: UDP listener drain begins", "addr", l.addr, "requests", l.inFlight())
		defer func() {
			l.m.core().Logger().Info("nm: UDP listener drain ended", core.DrainEnded(start, err, "addr", l.addr)...)
		}()
	}
	for _, s := range l.socks {
		s.conn.SetReadDeadline(time.Unix(1, 0)) // wakes and stops the reader
	}
	defer l.Close()
	for l.inFlight() > 0 {
		select {
		case <-l.drained:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (l *UDPListener) inFlight() int64 {
	var n int64
	for _, s := range l.socks {
		n += s.inFlight.Load()
	}
	return n
}

// readLoop reads batches of datagrams and delivers them. Before each read
// it flushes the replies left queued (see replyQueue).
func (s *udpListenSocket) readLoop() {
	s.shard.Bind()
	defer runtime.UnlockOSThread()
	defer s.end()
	for {
		s.out.readerIdle()
		n, err := s.batch.Read()
		poked := s.out.readerBusy()
		if err != nil {
			if transport.IsClosed(err) || s.l.draining.Load() {
				return
			}
			if poked && errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a Send woke us to flush
			}
			s.stats.RecvFailed.Add(1)
			s.shard.Manager().Logger().Debug("nm: udp read", "addr", s.local, "err", err)
			continue
		}
		s.stats.Reads.Add(1)
		s.readAt = core.Now()
		s.shard.Enter()
		full := 0
		for i := range s.batch.Msgs[:n] {
			if !s.deliver(&s.batch.Msgs[i]) {
				full++
			}
		}
		s.shard.Exit()
		if full > 0 {
			// Once per read, not per datagram: the consumers fell behind.
			s.shard.Manager().Logger().Warn("nm: UDP queue full: consumers fell behind, requests dropped", "addr", s.l.addr, "dropped", full)
		}
		if !s.shard.Manager().LockThreads() {
			// Let the consumers answer what was delivered before reading
			// on: with few CPUs their replies then leave together, at the
			// latest in the flush before the next read.
			runtime.Gosched()
		}
	}
}

// deliver delivers one datagram; false if the listener's queue was full.
func (s *udpListenSocket) deliver(m *transport.Message) bool {
	s.stats.Received.Add(1)
	b := m.Buf[:m.N]
	if m.Truncated || !m.Addr.IsValid() {
		s.stats.Dropped.Add(1)
		return true
	}
	dest := s.local
	if m.Local.IsValid() {
		// The address the client asked, even on a wildcard socket.
		dest = netip.AddrPortFrom(m.Local, s.local.Port())
	}
	local, peer := dest, m.Addr
	if p := s.l.cfg.Proxy; p != nil {
		var ok bool
		if b, local, peer, ok = s.unproxy(p, b, dest, m.Addr); !ok {
			s.stats.Dropped.Add(1)
			return true
		}
	}
	if f := s.l.cfg.Filter; f != nil && f(b, peer) != nil {
		s.stats.Dropped.Add(1)
		return true
	}
	h := s.pool.Get()
	h.Reuse(s.shard, s, dest, m.Addr)
	h.SetInterface(m.IfIndex)
	h.SetProxied(local, peer)
	h.SetMeter(s.l.meter)
	h.MeasureFrom(s.lat, s.readAt)
	buf := h.Buf()
	*buf = append((*buf)[:0], b...)
	s.inFlight.Add(1)
	select {
	case s.l.ch <- Event{Handle: Handle(h), Data: *buf}:
		return true
	default:
		s.stats.Dropped.Add(1)
		h.Detach()
		return false
	}
}

// unproxy strips the PROXY header of a datagram from real, sent to local,
// and returns the payload and the addresses to report; false if the
// datagram is refused.
func (s *udpListenSocket) unproxy(p *proxyproto.Policy, b []byte, local, real netip.AddrPort) ([]byte, netip.AddrPort, netip.AddrPort, bool) {
	if !p.Allowed(real.Addr()) {
		s.shard.Manager().Logger().Debug("nm: PROXY header from a peer not allowed", "peer", real)
		return nil, local, real, false
	}
	hdr, n, err := proxyproto.Parse(b)
	if err != nil {
		s.shard.Manager().Logger().Debug("nm: bad PROXY header", "peer", real, "err", err)
		return nil, local, real, false
	}
	if src, dst, ok := hdr.Addresses(); ok {
		return b[n:], dst, src, true
	}
	return b[n:], local, real, true
}

// end runs when a reader stops: its queued replies are written (and fail)
// and its pooled handles freed; the last one delivers the final event.
func (s *udpListenSocket) end() {
	if s.l.draining.Load() {
		s.out.readerGone() // the socket stays open for the replies in progress
	} else {
		s.out.close()
	}
	s.pool.Close() // before the final event, which tells the consumer it is done
	s.stats.Closed.Add(1)
	s.stats.Active.Add(-1)
	if s.l.running.Add(-1) == 0 {
		core.Finalize(s.l.ch, Event{Err: ErrCanceled}, func(old Event) {
			detachRequest(old)
			s.stats.Dropped.Add(1)
		})
	}
}

// Read on a request handle has nothing to read: a UDP request is one
// datagram, already delivered.
func (s *udpListenSocket) Read(h core.Handle) <-chan Event { return notSupported() }

func (s *udpListenSocket) ReadStop(h core.Handle) {}
func (s *udpListenSocket) Close(h core.Handle)    {}
func (s *udpListenSocket) Released(h core.Handle) {
	s.pool.Put(h)
	if s.inFlight.Add(-1) == 0 && s.l.draining.Load() {
		select {
		case s.l.drained <- struct{}{}:
		default:
		}
	}
}

func notSupported() <-chan Event {
	ch := make(chan Event, 1)
	ch <- Event{Err: ErrNotSupported}
	close(ch)
	return ch
}

// detachRequest releases the reference a request event carries, for the
// events dropped when a listener's channel is finalized.
func detachRequest(ev Event) {
	if ev.Err == nil && !ev.Handle.IsZero() {
		ev.Handle.Detach()
	}
}
