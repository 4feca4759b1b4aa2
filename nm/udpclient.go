package nm

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/transport"
)

// clientQueue is the capacity of a client handle's event channel. Each Read
// produces one event, so it only fills when the caller reads again and again
// without receiving; the reader then waits for room.
const clientQueue = 8

// udpClient is the socket of a client handle: a connected UDP socket. Its
// reader goroutine owns the reading state machine; Read, ReadStop and Close
// reach it through mu and the wake channel.
type udpClient struct {
	h      core.Handle
	conn   *net.UDPConn
	batch  *transport.Batch // one datagram; owned by the reader
	filter func([]byte) bool
	stats  *core.Counters
	proxy  []byte // a PROXY header sent before every datagram, or nil

	// ch carries the handle's events. Sender: the reader goroutine only,
	// which closes it after the final event.
	ch chan Event
	// wake (buffer 1, non-blocking sends) tells the reader that the state
	// under mu changed.
	wake chan struct{}

	mu       sync.Mutex
	started  bool          // Read was called at least once
	armed    bool          // a Read waits for its event
	deadline time.Time     // when the armed read times out (zero: never)
	timeout  time.Duration // the timeout of each read
	closing  bool          // Close was called or the manager is closing
	pending  bool          // batch holds a datagram read after ReadStop, for the next Read
	untrack  func()
}

// DialUDP opens a connected UDP client handle to addr on one of m's
// shards. The caller owns the handle's one reference: its Detach closes the
// socket, as Close does.
//
// Each Read of the handle yields exactly one event: a datagram (its Data
// valid until the next Read), ErrTimedOut if the read timeout passes first
// (the handle stays usable), or the final error. cfg.Filter may discard
// datagrams (wrong IDs, say); a discarded datagram does not end the read.
// Closing while a read is armed gives ErrCanceled, while none is, gives
// ErrShuttingDown; a handle never read gets no event.
func DialUDP(ctx context.Context, m *Manager, addr string, cfg UDPConfig) (Handle, error) {
	cm := m.core()
	shard := cm.NextShard()
	stats := shard.Counters(core.UDP)
	conn, err := transport.DialUDP(ctx, "udp", addr)
	if err != nil {
		stats.BindFailed.Add(1)
		return Handle{}, core.MapError(err)
	}
	c := &udpClient{conn: conn, stats: stats, ch: make(chan Event, clientQueue), wake: make(chan struct{}, 1), proxy: cfg.ProxyHeader}
	c.batch, err = transport.NewBatch(conn, 1, cfg.maxSize(DefaultUDPClientSize))
	if err == nil {
		c.untrack, err = cm.Track(c.shutdown)
	}
	if err != nil {
		conn.Close()
		return Handle{}, err
	}
	c.h = core.NewHandle(shard, c, transport.AddrPort(conn.LocalAddr()), transport.AddrPort(conn.RemoteAddr()))
	if f := cfg.Filter; f != nil {
		peer := c.h.RealPeer()
		c.filter = func(b []byte) bool { return f(b, peer) == nil }
	}
	stats.Opened.Add(1)
	stats.Active.Add(1)
	if err := cm.Go(c.loop); err != nil {
		c.end()
		return Handle{}, err
	}
	return Handle(c.h), nil
}

// shutdown closes the handle for Close, Released and the manager.
func (c *udpClient) shutdown() {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		c.poke()
	}
	c.mu.Unlock()
}

// poke wakes the reader and interrupts its socket read. Called with mu held.
func (c *udpClient) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.conn.SetReadDeadline(aLongTimeAgo)
}

var aLongTimeAgo = time.Unix(1, 0)

// Send writes b to the peer with one system call on the connected socket:
// it never waits for the peer (at worst for room in the kernel's send
// buffer), and b may be reused when it returns.
func (c *udpClient) Send(h core.Handle, b []byte) error {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return ErrClosed
	}
	if len(c.proxy) > 0 {
		b = append(c.proxy[:len(c.proxy):len(c.proxy)], b...)
	}
	_, err := c.conn.Write(b)
	c.stats.Writes.Add(1)
	if err != nil {
		c.stats.SendFailed.Add(1)
		return core.MapError(err)
	}
	c.stats.Sent.Add(1)
	return nil
}

// SendAsync writes b at once, as Send does; done gets the outcome from the
// shard, never on the caller's stack.
func (c *udpClient) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	err := c.Send(h, b)
	if errors.Is(err, ErrClosed) {
		return err
	}
	postCompletions(h.Shard(), []completion{{done, err}})
	return nil
}

func (c *udpClient) SetTimeouts(h core.Handle, t Timeouts) { c.SetReadTimeout(h, t.Read) }

func (c *udpClient) Read(h core.Handle) <-chan Event {
	c.mu.Lock()
	if !c.armed && !c.closing {
		c.started, c.armed = true, true
		c.arm()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return c.ch
}

func (c *udpClient) ReadStop(h core.Handle) {
	c.mu.Lock()
	if c.armed {
		c.armed = false
		c.poke()
	}
	c.mu.Unlock()
}

func (c *udpClient) SetReadTimeout(h core.Handle, d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	if c.armed {
		c.arm() // the armed read times out d from now, as on streams
		c.poke()
	}
	c.mu.Unlock()
}

// arm sets the armed read's deadline: the read timeout from now, or none.
// Called with mu held.
func (c *udpClient) arm() {
	c.deadline = time.Time{}
	if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
	}
}

func (c *udpClient) Close(h core.Handle) { c.shutdown() }

// Released closes the socket: a client handle is freed with its socket.
func (c *udpClient) Released(h core.Handle) {
	c.shutdown()
	h.Free()
}

// loop is the reader goroutine: it reads only while a Read is armed, so
// datagrams that arrive between reads wait in the kernel.
func (c *udpClient) loop() {
	defer c.end()
	for {
		c.mu.Lock()
		for !c.armed && !c.closing {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		if c.closing {
			c.finish()
			c.mu.Unlock()
			return
		}
		deadline, pending := c.deadline, c.pending
		if !pending {
			// Set under mu, so that a later poke's deadline in the past wins.
			c.conn.SetReadDeadline(deadline)
		}
		c.mu.Unlock()

		var err error
		if !pending {
			_, err = c.batch.Read()
		}
		c.h.Shard().Enter()
		ev, ok, final := c.outcome(err, deadline)
		sent := ok && c.tryDeliver(ev)
		c.h.Shard().Exit()
		if !ok {
			continue
		}
		if !sent && !c.deliver(ev) || final {
			c.mu.Lock()
			c.closing = true
			if final {
				c.started = false // the final event is out already
			}
			c.finish()
			c.mu.Unlock()
			return
		}
	}
}

// outcome turns a socket read into the event to deliver, if ok, and
// whether it is final.
func (c *udpClient) outcome(err error, deadline time.Time) (ev Event, ok, final bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && !c.pending {
		c.stats.Reads.Add(1)
		c.stats.Received.Add(1)
		m := &c.batch.Msgs[0]
		if m.Truncated || (c.filter != nil && !c.filter(m.Buf[:m.N])) {
			c.stats.Dropped.Add(1)
			return ev, false, false
		}
		c.pending = true
	}
	if c.closing || !c.armed {
		// Interrupted by Close or ReadStop: a datagram read meanwhile
		// stays pending for the next Read.
		return ev, false, false
	}
	switch {
	case err == nil:
		m := &c.batch.Msgs[0]
		c.armed, c.pending = false, false
		return Event{Handle: Handle(c.h), Data: m.Buf[:m.N]}, true, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		if deadline.IsZero() || time.Now().Before(deadline) {
			return ev, false, false // interrupted, not timed out
		}
		c.armed = false
		return Event{Handle: Handle(c.h), Err: ErrTimedOut}, true, false
	default:
		c.stats.RecvFailed.Add(1)
		return Event{Handle: Handle(c.h), Err: core.MapError(err)}, true, true
	}
}

// tryDeliver sends ev if the channel has room.
func (c *udpClient) tryDeliver(ev Event) bool {
	select {
	case c.ch <- ev:
		return true
	default:
		return false
	}
}

// deliver sends ev, waiting for room if the caller left the channel full.
// It returns false if the handle was closed while waiting.
func (c *udpClient) deliver(ev Event) bool {
	for !core.Deliver(c.h.Shard(), c.ch, ev, c.wake) {
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return false
		}
	}
	return true
}

// finish delivers the final event, if the handle was ever read, and closes
// the channel. Called by the reader with mu held and closing set.
func (c *udpClient) finish() {
	if !c.started {
		close(c.ch)
		return
	}
	err := ErrShuttingDown
	if c.armed {
		err = ErrCanceled
	}
	core.Finalize(c.ch, Event{Handle: Handle(c.h), Err: err}, nil)
}

func (c *udpClient) end() {
	c.conn.Close()
	c.untrack()
	c.stats.Closed.Add(1)
	c.stats.Active.Add(-1)
}
