package dnsmsg

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// clientQueue is the capacity of a stream client's event channel. Each
// Read produces one event, so it only fills when the caller reads again and
// again without receiving; the client then waits for room.
const clientQueue = 8

// DialTCP opens a DNS over TCP client Conn to the server at addr. The
// connect timeout is cfg.Stream.Timeouts.Initial (30 seconds if zero),
// within ctx. Queries may be pipelined: send many, then read their replies
// in any order.
func DialTCP(ctx context.Context, um *nm.Manager, addr string, cfg ClientConfig) (*Conn, error) {
	m := (*core.Manager)(um)
	return dialStream(ctx, m, addr, nil, cfg)
}

// DialTLS opens a DNS over TLS (DoT) client Conn to the server at addr. If
// tlsConf is nil or has no NextProtos, ALPN "dot" is asked for; the server
// name and session resumption are as stream.DialTLS does them.
func DialTLS(ctx context.Context, um *nm.Manager, addr string, tlsConf *tls.Config, cfg ClientConfig) (*Conn, error) {
	m := (*core.Manager)(um)
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	if len(tlsConf.NextProtos) == 0 {
		tlsConf = tlsConf.Clone()
		tlsConf.NextProtos = []string{ALPN}
	}
	return dialStream(ctx, m, addr, tlsConf, cfg)
}

func dialStream(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, cfg ClientConfig) (*Conn, error) {
	sc := cfg.stream()
	sc.Timeouts.Read = -1 // each Read's timeout is the client's own
	var h nm.Handle
	var err error
	if tlsConf != nil {
		h, err = stream.DialTLS(ctx, (*nm.Manager)(m), addr, tlsConf, sc)
	} else {
		h, err = stream.Dial(ctx, (*nm.Manager)(m), addr, sc)
	}
	if err != nil {
		return nil, err
	}
	kind := core.TCP
	if tlsConf != nil {
		kind = core.TLS
	}
	streamhook.SetFramed(core.Handle(h)) // Received counts replies, not reads
	return newStreamClient(m, h, kind, newAssembler(MaxSize), cfg)
}

// newStreamClient returns a client Conn over the connection handle h, whose
// events replies turns into reply messages: framed bytes (an assembler),
// or whole messages (DoH). It owns h's reference.
func newStreamClient(m *core.Manager, h nm.Handle, kind core.Transport, replies replyBuffer, cfg ClientConfig) (*Conn, error) {
	conn := &Conn{timeout: cfg.readTimeout(), outstanding: make(map[uint16]int32), turn: make(chan struct{}, 1)}
	_, framed := replies.(*assembler)
	c := &streamClient{
		m:       m,
		conn:    h,
		framed:  framed,
		filter:  conn.takeReply,
		failed:  conn.failed,
		stats:   core.Handle(h).Shard().Counters(kind),
		replies: replies,
		ch:      make(chan nm.Event, clientQueue),
		wake:    make(chan struct{}, 1),
		timeout: conn.timeout,
	}
	var err error
	if c.untrack, err = m.Track(c.shutdown); err != nil {
		h.Detach()
		return nil, err
	}
	c.h = core.NewHandle(core.Handle(h).Shard(), c, h.LocalAddr(), h.PeerAddr())
	if err := m.Go(c.loop); err != nil {
		c.untrack()
		h.Detach()
		return nil, err
	}
	conn.h = nm.Handle(c.h)
	return conn, nil
}

// replyBuffer turns a connection's data events into reply messages: an
// assembler for framed streams, a msgQueue for DoH.
type replyBuffer interface {
	Write(p []byte)        // bytes of one data event
	Next() ([]byte, error) // the next whole message, nil if none; an error ends the Conn
	Keep()                 // the last event's bytes are about to be reused
	Clear()                // drop everything
}

// streamClient is the socket of a DNS client handle over TCP, TLS or
// HTTP/2: it takes the replies read on the connection and hands out one per
// Read. Its loop goroutine owns the reading state; Read, ReadStop and Close
// reach it through mu and wake.
type streamClient struct {
	m      *core.Manager
	h      core.Handle // the client handle
	conn   nm.Handle   // the connection; the loop drops it when it ends
	framed bool        // messages are sent and read with a length prefix
	filter func([]byte) bool
	failed func(id uint16) // a query failed (DoH: a *RequestError)
	stats  *core.Counters
	// Owned by the loop.
	replies replyBuffer
	reqErrs []*RequestError // failed queries not yet delivered
	// ch carries the client handle's events, one per Read. Sender: the
	// loop, which closes it after the final event.
	ch chan nm.Event
	// wake (buffer 1, non-blocking sends) tells the loop that the state
	// under mu changed.
	wake chan struct{}

	mu       sync.Mutex
	started  bool          // Read was called at least once; guarded by mu
	armed    bool          // a Read waits for its event; guarded by mu
	closing  bool          // guarded by mu
	timeout  time.Duration // of each Read; guarded by mu
	deadline time.Time     // when the armed Read times out; guarded by mu
	untrack  func()
}

func (c *streamClient) shutdown() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.signal()
}

func (c *streamClient) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Send implements socket: the query goes out with its length prefix.
func (c *streamClient) Send(h core.Handle, b []byte) error {
	if !c.framed {
		return c.conn.Send(b)
	}
	var p [2]byte
	if err := prefix(&p, b); err != nil {
		return err
	}
	return stream.SendPrefixed(nm.Handle(c.conn), p[:], b)
}

// SendAsync implements socket.
func (c *streamClient) SendAsync(h core.Handle, b []byte, done chan<- error) error {
	if !c.framed {
		return c.conn.SendAsync(b, done)
	}
	var p [2]byte
	if err := prefix(&p, b); err != nil {
		return err
	}
	return stream.SendPrefixedAsync(nm.Handle(c.conn), p[:], b, done)
}

// Read implements socket: it arms one read.
func (c *streamClient) Read(h core.Handle) <-chan nm.Event {
	c.mu.Lock()
	if !c.armed && !c.closing {
		c.started, c.armed = true, true
		c.arm()
		c.signal()
	}
	c.mu.Unlock()
	return c.ch
}

// ReadStop implements socket: the armed read is dropped; a reply that
// comes meanwhile waits for the next Read.
func (c *streamClient) ReadStop(h core.Handle) {
	c.mu.Lock()
	c.armed = false
	c.mu.Unlock()
	c.signal()
}

func (c *streamClient) SetReadTimeout(h core.Handle, d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	armed := c.armed
	if armed {
		c.arm() // the armed read times out d from now, as on streams
	}
	c.mu.Unlock()
	if armed {
		c.signal()
	}
}

// arm sets the armed read's deadline: the read timeout from now, or none.
// Called with mu held.
func (c *streamClient) arm() {
	c.deadline = time.Time{}
	if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
	}
}

// SetTimeouts sets the read timeout from t.Read: zero keeps the one in
// force, nm.NoTimeout (negative) removes it.
func (c *streamClient) SetTimeouts(h core.Handle, t nm.Timeouts) {
	if t.Read != 0 {
		c.SetReadTimeout(h, max(t.Read, 0))
	}
}

// Close implements socket.
func (c *streamClient) Close(h core.Handle) { c.shutdown() }

// Released implements socket: a client handle goes with its connection.
func (c *streamClient) Released(h core.Handle) {
	c.shutdown()
	h.Free()
}

// loop is the client's goroutine. It takes bytes from the connection only
// while a Read is armed and no whole reply is buffered, so replies that
// nobody reads push back on the server.
func (c *streamClient) loop() {
	defer c.end()
	src := c.conn.Read()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var srcErr error // the connection's final error, once it came
	for {
		c.mu.Lock()
		for !c.armed && !c.closing {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		closing, deadline := c.closing, c.deadline
		c.mu.Unlock()
		if closing {
			c.finish(nil)
			return
		}
		if len(c.reqErrs) > 0 {
			re := c.reqErrs[0]
			c.reqErrs = c.reqErrs[1:]
			c.failed(re.ID)
			if !c.deliver(nm.Event{Handle: nm.Handle(c.h), Err: re}) {
				c.finish(nil)
				return
			}
			continue
		}
		msg, err := c.next()
		switch {
		case err != nil:
			c.finish(err)
			return
		case msg != nil:
			if !c.deliver(nm.Event{Handle: nm.Handle(c.h), Data: msg}) {
				c.finish(nil)
				return
			}
			continue
		case srcErr != nil:
			c.finish(srcErr)
			return
		}
		var expired <-chan time.Time
		if !deadline.IsZero() {
			timer.Reset(time.Until(deadline))
			expired = timer.C
		}
		c.replies.Keep() // the next receive ends the last chunk's validity
		select {
		case ev := <-src:
			var re *RequestError
			switch {
			case errors.As(ev.Err, &re):
				c.reqErrs = append(c.reqErrs, re)
			case ev.Err != nil:
				srcErr = ev.Err
			default:
				c.replies.Write(ev.Data)
			}
		case <-expired:
			c.timedOut(deadline)
		case <-c.wake:
		}
		timer.Stop()
	}
}

// next returns the next buffered reply that the filter accepts.
func (c *streamClient) next() ([]byte, error) {
	for {
		msg, err := c.replies.Next()
		if err != nil {
			c.stats.Dropped.Add(1)
			return nil, err
		}
		if msg != nil && c.framed {
			c.stats.Received.Add(1)
		}
		if msg == nil || c.filter(msg) {
			return msg, nil
		}
		c.stats.Dropped.Add(1)
	}
}

// deliver hands the armed read its reply. It returns false if the client
// closed while waiting for room.
func (c *streamClient) deliver(ev nm.Event) bool {
	c.mu.Lock()
	c.armed = false
	c.mu.Unlock()
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

// timedOut ends the armed read with nm.ErrTimedOut if its deadline passed.
func (c *streamClient) timedOut(deadline time.Time) {
	c.mu.Lock()
	expired := c.armed && c.deadline.Equal(deadline) && !time.Now().Before(deadline)
	c.mu.Unlock()
	if expired {
		c.deliver(nm.Event{Handle: nm.Handle(c.h), Err: nm.ErrTimedOut})
	}
}

// finish delivers the final event, if the handle was ever read, and closes
// the channel. err is nil for a local shutdown.
func (c *streamClient) finish(err error) {
	c.mu.Lock()
	started, armed := c.started, c.armed
	c.closing = true
	c.mu.Unlock()
	if !started {
		close(c.ch)
		return
	}
	if err == nil {
		err = nm.ErrShuttingDown
		if armed {
			err = nm.ErrCanceled
		}
	}
	core.Finalize(c.ch, nm.Event{Handle: nm.Handle(c.h), Err: err}, nil)
}

func (c *streamClient) end() {
	c.replies.Clear()
	c.conn.Detach()
	c.untrack()
}
