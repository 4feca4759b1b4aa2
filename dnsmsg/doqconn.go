package dnsmsg

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
)

// doqConn is one QUIC connection of a DoQ listener. Its loop goroutine
// accepts streams and starts a reader for each; watchUni ends the
// connection if the client opens a unidirectional stream.
type doqConn struct {
	s           *doqServer
	qc          *quic.Conn
	shard       *core.Shard
	stats       *core.Counters
	lat         *core.Latency
	local, peer netip.AddrPort
	// acceptCtx ends the stream accepting: at drain, or when the
	// connection closes.
	acceptCtx  context.Context
	stopAccept context.CancelFunc
	// active counts the streams accepted and not done (reading, or
	// delivered and not released): a draining connection closes at zero.
	active    atomic.Int32
	draining  atomic.Bool
	drainOnce sync.Once
}

func newDoQConn(s *doqServer, qc *quic.Conn, shard *core.Shard) *doqConn {
	c := &doqConn{
		s: s, qc: qc, shard: shard, stats: s.meter.On(shard), lat: s.meter.Latency(shard),
		local: transport.AddrPort(qc.LocalAddr()), peer: transport.AddrPort(qc.RemoteAddr()),
	}
	c.acceptCtx, c.stopAccept = context.WithCancel(qc.Context())
	return c
}

// loop accepts the connection's streams until it closes or drains, then
// waits for it to close.
func (c *doqConn) loop() {
	defer c.s.wg.Done()
	defer c.end()
	for {
		str, err := c.qc.AcceptStream(c.acceptCtx)
		if err != nil {
			break
		}
		c.active.Add(1)
		if c.draining.Load() {
			str.CancelRead(quic.StreamErrorCode(DoQRequestCancelled))
			str.CancelWrite(quic.StreamErrorCode(DoQRequestCancelled))
			str.ReleaseStreamCredit()
			c.done()
			continue
		}
		c.s.wg.Add(1)
		go c.serveStream(str)
	}
	<-c.qc.Context().Done()
}

// end removes the closed connection from its listener.
func (c *doqConn) end() {
	c.stopAccept()
	c.stats.Active.Add(-1)
	c.s.unregister(c)
}

// watchUni ends the connection with DOQ_PROTOCOL_ERROR if the client
// opens a unidirectional stream (RFC 9250 4.2).
func (c *doqConn) watchUni() {
	defer c.s.wg.Done()
	if _, err := c.qc.AcceptUniStream(c.qc.Context()); err == nil {
		c.protocolError(errDoQUni)
	}
}

// protocolError ends the connection with DOQ_PROTOCOL_ERROR, counted.
func (c *doqConn) protocolError(err error) {
	c.stats.Dropped.Add(1)
	c.s.m.Logger().Debug("dnsmsg: DoQ protocol error", "peer", c.peer, "err", err)
	c.qc.CloseWithError(DoQProtocolError, err.Error())
}

// drain stops accepting streams; the connection closes with DOQ_NO_ERROR
// once its accepted streams are done.
func (c *doqConn) drain() {
	c.draining.Store(true)
	c.stopAccept()
	if c.active.Load() == 0 {
		c.drained()
	}
}

// done ends a stream's part in the connection.
func (c *doqConn) done() {
	if c.active.Add(-1) == 0 && c.draining.Load() {
		c.drained()
	}
}

// drained closes a draining connection with nothing left in flight, with
// DOQ_NO_ERROR, after a linger for its last replies to reach the client:
// a CONNECTION_CLOSE discards stream data not yet sent or acknowledged.
// QUIC tells nothing of a stream's acknowledgement, so the linger is a
// probe timeout's worth (RFC 9002 6.2: smoothed RTT + 4 deviations, with
// room for the ACK delay), within [10 ms, drainLinger].
func (c *doqConn) drained() {
	c.drainOnce.Do(func() {
		st := c.qc.ConnectionStats()
		linger := min(max(2*st.SmoothedRTT+4*st.MeanDeviation+25*time.Millisecond, 10*time.Millisecond), drainLinger)
		time.AfterFunc(linger, func() { c.qc.CloseWithError(DoQNoError, "") })
	})
}

// serveStream reads the query of one stream and delivers it.
func (c *doqConn) serveStream(str *quic.Stream) {
	defer c.s.wg.Done()
	growStack()
	rh := c.s.handles.Get()
	if t := c.s.cfg.streamTimeout(); t > 0 {
		str.SetReadDeadline(time.Now().Add(t))
	}
	buf, err := readDoQMessage(str, (*rh.Buf()))
	(*rh.Buf()) = buf
	if err == nil {
		err = doqCheckQuery(buf[2:])
	}
	if err != nil {
		c.readFailed(str, err)
		c.s.handles.Put(rh)
		return
	}
	if !c.waitHandshake(buf[2:]) {
		c.abandon(str)
		c.s.handles.Put(rh)
		return
	}
	d := &doqStream{c: c, str: str}
	rh.Reuse(c.shard, d, c.local, c.peer)
	c.stats.Received.Add(1)
	c.deliver(d, rh)
}

// readFailed handles a stream whose query could not be read.
func (c *doqConn) readFailed(str *quic.Stream, err error) {
	switch {
	case isDoQProtocolError(err):
		c.protocolError(err)
	case core.MapError(err) == nm.ErrTimedOut:
		c.stats.Dropped.Add(1)
		c.s.m.Logger().Debug("dnsmsg: DoQ stream without a whole query in time", "peer", c.peer)
	}
	c.abandon(str)
}

// abandon resets a stream that carries no request and gives its place
// back.
func (c *doqConn) abandon(str *quic.Stream) {
	str.CancelRead(quic.StreamErrorCode(DoQRequestCancelled))
	str.CancelWrite(quic.StreamErrorCode(DoQRequestCancelled))
	str.ReleaseStreamCredit()
	c.done()
}

// waitHandshake holds a query that came in 0-RTT data until the handshake
// completes, unless it is a QUERY or a NOTIFY (RFC 9250 4.5). It returns
// false if the connection ends first.
func (c *doqConn) waitHandshake(msg []byte) bool {
	if op := msg[2] >> 3 & 0xf; op == 0 || op == 4 {
		return true
	}
	select {
	case <-c.qc.HandshakeComplete():
		return true
	case <-c.qc.Context().Done():
		return false
	}
}

// deliver hands a request to the consumer without waiting: when the
// channel is full the request is answered REFUSED (counted Shed).
func (c *doqConn) deliver(d *doqStream, rh core.Handle) {
	rh.SetMeter(c.s.meter)
	rh.Measure(c.lat)
	ev := nm.Event{Handle: nm.Handle(rh), Data: (*rh.Buf())[2:]}
	d.watch(rh)
	if t := c.s.requestTimeout; t > 0 {
		d.expiry = time.AfterFunc(t, d.expire)
	}
	c.shard.Enter()
	select {
	case c.s.ch <- ev:
		c.shard.Exit()
		return
	default:
	}
	c.shard.Exit()
	c.stats.Shed.Add(1)
	logShed(c.s.m, core.QUIC, c.peer)
	rh.MeasureFrom(nil, 0) // a refusal is no answer's latency
	rh.Send(appendRefusal(nil, (*rh.Buf())[2:], RcodeRefused))
	rh.Detach()
}

// growStack grows the stack of a goroutine that reads a QUIC stream (a
// server's stream, a client's query) at its start, to what quic-go's read
// path takes: growing there, deep in that path, copied and adjusted every
// frame of it, 8% of the CPU time of a query in a profile of nmecho under
// doqperf (1% after).
//
//go:noinline
func growStack() byte {
	var frame [doqStack]byte
	frame[stackIndex] = 1 // an index the compiler cannot know keeps the frame
	return frame[len(frame)-1-stackIndex]
}

// doqStack is the frame growStack takes: past it, the runtime doubles a
// new goroutine's 2 KiB stack to 8 KiB in one copy.
const doqStack = 4 << 10

// stackIndex is always 0; growStack cannot know it.
var stackIndex int
