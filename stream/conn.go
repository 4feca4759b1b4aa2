package stream

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// conn is the socket behind a stream handle: one TCP connection, with TLS
// over it or not. Its reader goroutine owns the reading state machine and
// delivers every event; Read, ReadStop, Close and the writer reach it
// through mu and the wake channel. Writes are done by whoever holds the
// writing flag under wmu (see conn_send.go): a sender's one attempt that
// does not wait, or a writer goroutine that ends when the output is empty.
type conn struct {
	h      core.Handle
	m      *core.Manager
	shard  *core.Shard
	stats  *core.Counters
	nc     net.Conn        // what is read and written: tcp, or the TLS conn over it
	tcp    *net.TCPConn    // the socket
	tls    *tls.Conn       // nil for TCP
	wire   *wire           // what tls runs over; nil for TCP
	rc     syscall.RawConn // tcp's, made at the first write; used by the writing flag's holder
	sr     *transport.StreamReader
	l      *Listener // the listener that accepted it; nil on clients
	server bool
	born   time.Time          // when it was accepted: the initial timeout runs from here
	proxy  *proxyproto.Header // the PROXY header, set before the handle is handed out

	backpressure int
	maxOutput    int

	// ch carries the handle's events. Sender: the reader goroutine only,
	// which closes it after the final event. Its one slot lets the reader
	// read ahead by one event and leaves room for the final event.
	ch chan nm.Event
	// wake (buffer 1, non-blocking sends) tells the reader that the state
	// under mu changed or that the output shrank or stopped being written
	// (its backpressure, and the drain before a local close, wait on it).
	wake chan struct{}
	// stop is closed, under mu, when closing is set: a Consumer blocked in
	// Data waits on it.
	stop     chan struct{}
	consumer streamhook.Consumer // set once before reading starts; nil: data events
	// framed: the protocol over the data events counts Received (SetFramed).
	framed atomic.Bool

	mu        sync.Mutex
	t         nm.Timeouts // guarded by mu
	keepalive bool        // guarded by mu
	started   bool        // Read was called; guarded by mu
	reading   bool        // reading and not stopped; guarded by mu
	gotData   bool        // the first data came: idle timeout from now on; guarded by mu
	closing   bool        // shut down locally or by a fatal error; guarded by mu
	reason    error       // the final error a shutdown gives, if not ErrCanceled/ErrShuttingDown; guarded by mu
	deadline  time.Time   // client: when the armed read times out; guarded by mu
	busy      int         // server: requests being answered (SetBusy); guarded by mu
	armed     time.Time   // the read deadline set on the socket; guarded by mu
	idleFrom  time.Time   // server: when the idle timer last started; guarded by mu

	// Owned by the reader goroutine.
	class int        // buffer class of the next read
	inUse [2]*[]byte // buffers of the last two data events, still the consumer's

	wmu     sync.Mutex
	writing bool      // a goroutine owns the output (see conn_send.go); guarded by wmu
	queue   []sendReq // sends not wholly written, in order; guarded by wmu
	head    int       // bytes of queue[0] written already (TCP); guarded by wmu
	raw     *[]byte   // TLS records made and not yet written (pooled), or nil; guarded by wmu
	unsent  int       // bytes in queue (less head) and raw, bounded by maxOutput; guarded by wmu
	closed  bool      // closed locally: no new send, what is queued still goes; guarded by wmu
	// halfClose: CloseWrite waits for the output to be written; guarded by wmu
	halfClose bool
	broken    error // the output failed or was dropped: sends fail; guarded by wmu

	closeOnce sync.Once
	quota     func() // releases the listener quota slot; nil if none
}

// Shutdown implements core.Shutdowner: the manager closes, so what is
// queued is dropped (failing with nm.ErrCanceled) rather than written.
func (c *conn) Shutdown() {
	c.breakOutput(nm.ErrClosed)
	c.shutdown(nil)
}

func newConn(m *core.Manager, shard *core.Shard, meter *core.Meter, stats *core.Counters, tcp *net.TCPConn, tc *tls.Conn, cfg *Config, consumed bool) (*conn, error) {
	c := &conn{
		m:            m,
		shard:        shard,
		stats:        stats,
		nc:           tcp,
		tcp:          tcp,
		tls:          tc,
		born:         time.Now(),
		backpressure: cfg.backpressure(),
		maxOutput:    cfg.maxOutput(),
		t:            cfg.timeouts(),
		wake:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	if !consumed {
		// A consumer takes the data, so its connection has no events:
		// an idle one costs that much less.
		c.ch = make(chan nm.Event, 1)
	}
	if tc != nil {
		c.nc = tc
		c.wire, _ = tc.NetConn().(*wire)
	} else {
		sr, err := transport.NewStreamReader(tcp, c.getBuf, putBuf)
		if err != nil {
			return nil, err
		}
		c.sr = sr
	}
	if err := transport.SetStreamOptions(tcp, cfg.Delay, cfg.KeepAlive); err != nil {
		return nil, err
	}
	if err := m.TrackSocket(c); err != nil {
		return nil, err
	}
	c.h = core.NewHandle(shard, c, transport.AddrPort(tcp.LocalAddr()), transport.AddrPort(tcp.RemoteAddr()))
	c.h.SetMeter(meter)
	return c, nil
}

// ready makes a TLS connection, its handshake done, write its records to
// the output (see wire).
func (c *conn) ready() {
	if c.wire != nil {
		c.wire.out.Store(c)
	}
}

// poke wakes the reader and interrupts its socket read. Called with mu held.
func (c *conn) poke() {
	c.signal()
	c.setReadDeadline(aLongTimeAgo)
}

// setReadDeadline sets the socket's read deadline. Called with mu held.
func (c *conn) setReadDeadline(t time.Time) {
	c.armed = t
	c.nc.SetReadDeadline(t)
}

// armRead sets the socket's read deadline for the next read to want, or
// leaves an earlier one that still has at least half of its time to go:
// setting a deadline costs more than the rare early wake, after which the
// read is re-armed (readFailed tells a deadline that is not yet due from
// a timeout). Called with mu held.
func (c *conn) armRead(want time.Time, now time.Time) {
	a := c.armed
	switch {
	case a.IsZero() || !a.After(now):
		// None, or due: set what is wanted.
	case want.IsZero():
		return // no timeout for now (answering): the armed one wakes us to look again
	case !want.Before(a) && a.Sub(now) >= want.Sub(now)/2:
		return
	}
	if !want.Equal(a) {
		c.setReadDeadline(want)
	}
}

// signal wakes the reader without interrupting a read.
func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// shutdown ends the conversation: the reader gives the final event (reason,
// or ErrCanceled/ErrShuttingDown if nil) and closes the socket.
func (c *conn) shutdown(reason error) {
	c.mu.Lock()
	if !c.closing {
		c.markClosing()
		c.reason = reason
		c.poke()
	}
	c.mu.Unlock()
	// No new send from now on; what is queued still goes, before the
	// socket is closed (see drain), unless the output broke.
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
}

// markClosing sets closing and closes stop. Called with mu held.
func (c *conn) markClosing() {
	if !c.closing {
		c.closing = true
		close(c.stop)
	}
}

// closeSocket closes the socket once; reset sends an RST.
func (c *conn) closeSocket(reset bool) {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		if c.broken == nil {
			c.broken = nm.ErrClosed
		}
		c.wmu.Unlock()
		if reset {
			transport.Reset(c.tcp)
			return
		}
		if c.tls != nil {
			// Sends close_notify straight to the socket, bounded by a
			// write deadline.
			if c.wire != nil {
				c.wire.out.Store(nil)
			}
			c.tls.SetWriteDeadline(time.Now().Add(time.Second))
			c.tls.Close()
			return
		}
		c.tcp.Close()
	})
}

// end runs once, when the reader goroutine ends: the output is written,
// then the socket is closed.
func (c *conn) end() {
	c.mu.Lock()
	c.markClosing()
	reset := c.reason == nm.ErrTimedOut || c.reason == nm.ErrOutputFull
	c.mu.Unlock()
	c.drain()
	c.closeSocket(reset)
	if c.quota != nil {
		c.quota()
	}
	c.m.UntrackSocket(c)
	c.stats.Closed.Add(1)
	c.stats.Active.Add(-1)
}

// drain waits, on the reader goroutine, until nobody writes the output:
// it was all written, or it failed (a write timeout bounds each wait for
// the peer; the manager's shutdown drops it).
func (c *conn) drain() {
	for {
		c.wmu.Lock()
		busy := c.writing && c.broken == nil
		c.wmu.Unlock()
		if !busy {
			return
		}
		<-c.wake
	}
}

// Close implements socket: it shuts the conversation down at once: no
// more reading or sending; what was sent before still goes out, within
// the write timeout, before the socket closes.
func (c *conn) Close(h core.Handle) { c.shutdown(nil) }

// Released implements socket: the last reference is gone (and with it
// every pending send, which holds one), so the conversation ends.
func (c *conn) Released(h core.Handle) {
	c.shutdown(nil)
	h.Free()
}

// SetTimeouts implements the handle's SetTimeouts: a zero field keeps the
// timeout in force, a negative one (nm.NoTimeout) turns it off.
func (c *conn) SetTimeouts(h core.Handle, t nm.Timeouts) {
	c.mu.Lock()
	c.t = mergeTimeouts(c.t, t)
	if !c.server && t.Read > 0 && c.reading {
		c.deadline = time.Now().Add(t.Read)
	}
	c.poke()
	c.mu.Unlock()
}

// SetReadTimeout sets a client's read timeout; zero or negative means
// none (nm.Handle.SetReadTimeout).
func (c *conn) SetReadTimeout(h core.Handle, d time.Duration) {
	if d == 0 {
		d = nm.NoTimeout
	}
	c.SetTimeouts(h, nm.Timeouts{Read: d})
}

// mergeTimeouts returns old with the fields set in t: zero keeps old's,
// negative means none (zero in the result).
func mergeTimeouts(old, t nm.Timeouts) nm.Timeouts {
	set := func(d *time.Duration, v time.Duration) {
		switch {
		case v > 0:
			*d = v
		case v < 0:
			*d = 0
		}
	}
	set(&old.Initial, t.Initial)
	set(&old.Idle, t.Idle)
	set(&old.Keepalive, t.Keepalive)
	set(&old.Write, t.Write)
	set(&old.Read, t.Read)
	return old
}

func (c *conn) SetKeepalive(h core.Handle, on bool) {
	c.mu.Lock()
	c.keepalive = on
	c.poke()
	c.mu.Unlock()
}

// TLSState returns the TLS state of a stream handle, and false for handles
// that are not TLS connections.
func TLSState(h nm.Handle) (tls.ConnectionState, bool) {
	c, ok := core.Handle(h).Socket().(*conn)
	if !ok || c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// ProxyHeader returns the PROXY header a stream handle's connection began
// with (TLVs and all), and false for handles without one.
func ProxyHeader(h nm.Handle) (proxyproto.Header, bool) {
	c, ok := core.Handle(h).Socket().(*conn)
	if !ok || c.proxy == nil {
		return proxyproto.Header{}, false
	}
	return *c.proxy, true
}

// CloseWrite shuts down the writing side of a stream handle (a TCP FIN, or
// a TLS close_notify) once the sends made before it are written; reading
// goes on, and later sends fail with nm.ErrClosed.
func CloseWrite(h nm.Handle) error {
	c, ok := core.Handle(h).Socket().(*conn)
	if !ok {
		return nm.ErrNotSupported
	}
	c.wmu.Lock()
	c.closed = true
	if c.writing {
		c.halfClose = true // the writer does it when the output is written
		c.wmu.Unlock()
		return nil
	}
	c.wmu.Unlock()
	return c.closeWrite()
}

// closeWrite sends the FIN, or the close_notify (which goes through the
// output, and is then followed by nothing else).
func (c *conn) closeWrite() error {
	if c.tls != nil {
		return c.tls.CloseWrite()
	}
	return c.tcp.CloseWrite()
}

// Timeouts returns the timeouts of a stream handle, and the zero value for
// other handles.
func Timeouts(h nm.Handle) nm.Timeouts {
	c, ok := core.Handle(h).Socket().(*conn)
	if !ok {
		return nm.Timeouts{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
