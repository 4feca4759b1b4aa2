package dnsmsg

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rainbowduck/netmgr/nm"
)

// The HTTP/2 side of a DoH listener: one loop per connection over x/net's
// Framer and HPACK codec, made for DNS. A request is one stream with one
// small message each way, so the loop keeps no http.Request, no header
// maps and no goroutine per stream: the connection's own goroutine reads
// the frames and delivers each request as it completes; the reply is
// framed by the goroutine that sends it and written by the connection's
// writer goroutine.
//
// Goroutines and state:
//   - the reader (the stream listener's goroutine for the connection) owns
//     the read side: Framer, HPACK decoder, the header block being
//     decoded, and a request's body until it is delivered. It also runs
//     the timeouts, as ticks of its read deadline.
//   - c.mu guards everything the two sides share: the streams, their
//     states and send windows, the HPACK encoder, and the output buffer.
//   - the writer (a goroutine per connection, doh2send.go) writes c.out
//     whenever woken, without the lock held. Nobody else writes: Send
//     frames its reply into c.out and returns, and the reader keeps
//     reading (and sees floods) while a peer does not read.

const (
	// h2ConnWindow is the connection's receive window we offer.
	h2ConnWindow = 1 << 20
	// h2StreamWindow is each stream's receive window: HTTP/2's default,
	// which holds the largest DNS message, so no stream ever needs a
	// WINDOW_UPDATE.
	h2StreamWindow = 65535
	// h2MaxQuietFrames caps the frames (PING, SETTINGS, PRIORITY, empty
	// CONTINUATION...) a connection may send with no stream open and no
	// request: past it, it is cut off as a flood. Such frames never extend
	// the idle or initial timeouts.
	h2MaxQuietFrames = 1000
	// h2ReadBuffer is the size of a connection's read buffer.
	h2ReadBuffer = 8 << 10
)

type h2state uint8

const (
	stBody    h2state = iota // headers read, body coming; the reader owns the handle
	stReady                  // complete, waiting for an in-flight place; the reader owns the handle
	stWaiting                // delivered; no reply yet
	stSending                // reply framed in part; the rest waits for window
	stClosed                 // done: answered, reset, or the connection ended
)

// h2stream is one request: its stream's state and its handle's socket.
type h2stream struct {
	c    *h2conn
	h    core.Handle
	id   uint32
	refs atomic.Int32 // the connection's and the handle's; the last puts it back

	// The reader's, until delivery.
	ep         *endpoint
	clen       int64  // declared content-length; -1 if none
	remoteOpen bool   // the client has not ended its side
	get        bool   // a GET: its message came with the headers; a body is dropped
	status     int    // an error status decided at the headers, answered once the request ends
	n          int    // body bytes in h.Buf
	charged    int    // body bytes counted in c.body and the listener's (until the body ends)
	msg        []byte // the request, once complete
	recvWindow int32
	deadline   time.Time // stBody: the body must be complete by then; stWaiting: the reply given (the request timeout)

	// Guarded by c.mu.
	state      h2state
	owned      bool  // not delivered: the reader holds the handle's reference
	err        error // what a Send gets now that no reply can go
	replied    bool
	slot       bool // holds an in-flight place
	blocked    bool // in c.blocked
	sendWindow int32
	pending    []byte // reply data not framed yet
	copy       []byte // a Send's reply held back by the window, copied (b is the caller's)
	held       int    // len(pending) counted in c.held while blocked
	done       chan<- error
	since      time.Time // when the reply began waiting for window
}

// h2done is a reply whose last byte is in the output: done (SendAsync's;
// nil for Send) gets its outcome once it is written.
type h2done struct {
	done chan<- error
	end  int // where the reply ends in the output it was queued in
}

// h2conn is one HTTP/2 connection of a DoH listener.
type h2conn struct {
	s     *httpServer
	hc    *httpConn
	nc    net.Conn
	isTLS bool
	stats *core.Counters
	lat   *core.Latency
	write time.Duration // write timeout; 0: none
	tick  time.Duration // period of the timeout checks; 0: none

	// The reader's.
	br          *bufio.Reader
	rfr         *http2.Framer
	dec         *hpack.Decoder
	blk         h2block
	lastID      uint32
	requests    uint64    // streams opened with a request
	seen        uint64    // requests at the last tick
	quietSince  time.Time // since when no stream is open and no request came
	quietFrames int       // frames read since a request last came or a stream was last open
	started     bool      // a request was seen: Idle bounds quiet times, not Initial
	goaway      bool      // the peer is going away: no new streams
	drained     bool      // we sent GOAWAY for a drain: no new streams; the end once none is open
	recvWindow  int32
	recvUnacked int32
	nextTick    time.Time // when the timeouts are checked next
	body        int       // body bytes buffered in streams whose body is not complete
	maxOut      int       // HTTPConfig.MaxOutput
	// over is set under mu when the bytes queued pass maxOut; the reader
	// (after each frame) or the sender that queued them cuts the
	// connection off.
	over atomic.Bool
	// wake (buffer 1, non-blocking sends under mu) tells the writer that
	// there is output. Senders: whoever queues output (Send, the reader,
	// the timers). Receiver: the writer. One slot is enough: the writer
	// takes all the output queued by the time it runs.
	wake chan struct{}
	// quit is closed by end, once the reader stops: the writer writes (or
	// fails) what is left and returns, closing writerDone, which end waits
	// for so that the connection's last counts are in before it is gone.
	quit, writerDone chan struct{}
	// ready[readyAt:] holds the complete requests waiting for an in-flight
	// place, oldest first; the reader appends and takes (skipping those
	// closed meanwhile), readyN counts them for the others.
	ready   []*h2stream
	readyAt int

	mu sync.Mutex
	// Guarded by mu.
	streams map[uint32]*h2stream
	blocked []*h2stream // replies waiting for window, oldest first
	wfr     *http2.Framer
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	out     []byte   // frames to write
	cuts    []int    // offsets in out where a stream ends (TLS: its record ends)
	dones   []h2done // replies whose last byte is in out
	inWrite int      // bytes the writer is writing
	held    int      // reply bytes waiting for the peer's window
	broken  error    // the connection failed or ended: replies fail with it
	// flushed, set by goAway, is closed by the writer once the output is
	// written (or dropped): the GOAWAY is out.
	flushed     chan struct{}
	sendWindow  int32
	peerWindow  int32  // peer's initial stream window
	peerFrame   uint32 // peer's max frame size
	spareOut    []byte
	spareCuts   []int
	spareDones  []h2done
	resets      [64]uint32 // streams we reset lately: their late frames are ignored
	resetAt     int
	inFlight    int         // requests delivered and not yet answered or released
	readyN      int         // len(ready)
	poked       bool        // the reader's deadline was set in the past to wake it
	detachAfter []*h2stream // undelivered streams closed under mu; their handles go after it
}

// h2block is the header block being decoded and what it said.
type h2block struct {
	id                   uint32
	endStream            bool
	trailer              *h2stream // a trailer block of this stream; fields ignored
	discard              bool      // decoded for HPACK's sake only
	reset                bool      // then reset the stream with rst
	rst                  http2.ErrCode
	size                 int // encoded bytes
	list                 int // decoded size (RFC 9113 6.5.2)
	tooBig               bool
	malformed            bool
	regular              bool // a regular field was seen: no pseudo-field may follow
	method, path, scheme string
	ctype, clen          string
	nctype, nclen        int
}

// h2sink is the connection as the writing Framer's destination: it appends
// to the output buffer (under c.mu).
type h2sink h2conn

func (s *h2sink) Write(p []byte) (int, error) {
	s.out = append(s.out, p...)
	return len(p), nil
}

// h2reader is the connection as the reading Framer's source: a read
// deadline that passes runs the timeout checks and the read goes on, so
// that the Framer never sees a frame cut in two.
type h2reader h2conn

func (r *h2reader) Read(p []byte) (int, error) {
	c := (*h2conn)(r)
	for {
		n, err := c.nc.Read(p)
		if n > 0 {
			c.stats.Reads.Add(1)
		}
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			if n > 0 && err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil
			}
			return n, err
		}
		if !c.onWake() {
			return 0, err
		}
	}
}

// onWake runs on the reader when its read deadline passes: a tick of the
// timeouts, or a poke because an in-flight place came free for a request
// that waits. It re-arms the deadline; false ends the connection.
func (c *h2conn) onWake() bool {
	c.mu.Lock()
	c.poked = false
	c.mu.Unlock()
	if c.drainStep() {
		c.closeGracefully()
		return false
	}
	c.deliverReady()
	if c.tick > 0 {
		if now := time.Now(); !now.Before(c.nextTick) {
			if !c.onTick(now) {
				return false
			}
			if c.over.Load() {
				c.cut(true)
				return false
			}
			c.nextTick = now.Add(c.tick)
		}
	}
	c.mu.Lock()
	if !c.poked { // a poke since wins: it is in the past already
		c.nc.SetReadDeadline(c.nextTick)
	}
	c.mu.Unlock()
	return true
}

// pokeLocked wakes the reader from its read. Called with mu held.
func (c *h2conn) pokeLocked() {
	if !c.poked {
		c.poked = true
		c.nc.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// serveH2 serves an HTTP/2 connection until it ends. sawPreface: the
// client preface was read already (cleartext sniffing).
func (s *httpServer) serveH2(hc *httpConn, nc net.Conn, isTLS, sawPreface bool) {
	c := s.newH2Conn(hc, nc, isTLS)
	if !s.track(c) {
		return // the listener closed
	}
	defer s.untrackConn(c)
	c.serve(sawPreface)
}

func (c *h2conn) serve(sawPreface bool) {
	s, nc := c.s, c.nc
	if s.m.Go(c.writer) != nil {
		return
	}
	defer c.end()
	start := time.Now()
	c.quietSince = start
	if !sawPreface {
		if s.initial > 0 {
			nc.SetReadDeadline(start.Add(s.initial))
		}
		var p [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(c.br, p[:]); err != nil || string(p[:]) != http2.ClientPreface {
			c.stats.RecvFailed.Add(1)
			return
		}
	}
	if c.tick > 0 {
		c.nextTick = time.Now().Add(c.tick)
	}
	nc.SetReadDeadline(c.nextTick)
	c.mu.Lock()
	if s.draining.Load() {
		c.pokeLocked() // a drain began before we set the deadline: its poke was lost
	}
	c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(s.cfg.maxStreams())},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(s.cfg.maxHeaderBytes())},
	)
	c.wfr.WriteWindowUpdate(0, h2ConnWindow-h2StreamWindow)
	c.mu.Unlock()
	c.kick()
	for {
		f, err := c.rfr.ReadFrame()
		if err != nil {
			// The Framer's stream errors (a HEADERS frame's padding, a zero
			// WINDOW_UPDATE) end the connection: a HEADERS frame it
			// refused was not decoded, so HPACK's state is lost (RFC 9113
			// 5.4.1 allows it).
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				c.fail(se.Code)
			case errors.As(err, &ce):
				c.fail(http2.ErrCode(ce))
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.fail(http2.ErrCodeFrameSize)
			}
			return
		}
		if c.quietFrames++; c.quietFrames > h2MaxQuietFrames && c.quiet() {
			c.stats.Floods.Add(1)
			c.s.m.Logger().Warn("dnsmsg: DoH flood cut: frames with no request", "peer", c.hc.peer, "frames", c.quietFrames)
			c.fail(http2.ErrCodeEnhanceYourCalm)
			return
		}
		if err := c.frame(f); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.fail(http2.ErrCode(ce))
			}
			return
		}
		if c.over.Load() {
			c.cut(true) // the peer provokes output it does not read
			return
		}
		if len(c.ready) > 0 {
			c.deliverReady()
		}
		if c.br.Buffered() == 0 {
			c.kick()
		}
	}
}

func (s *httpServer) newH2Conn(hc *httpConn, nc net.Conn, isTLS bool) *h2conn {
	c := &h2conn{s: s, hc: hc, nc: nc, isTLS: isTLS, streams: make(map[uint32]*h2stream),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), writerDone: make(chan struct{}), maxOut: s.cfg.maxOutput()}
	c.br = bufio.NewReaderSize((*h2reader)(c), h2ReadBuffer)
	c.rfr = http2.NewFramer(nil, c.br)
	c.rfr.SetReuseFrames()
	c.dec = hpack.NewDecoder(4096, c.emit)
	c.wfr = http2.NewFramer((*h2sink)(c), nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.stats, c.lat = c.s.meter.On(hc.shard), c.s.meter.Latency(hc.shard)
	t := s.cfg.Stream.Resolved()
	c.write = t.Write
	c.tick = 0
	for _, d := range []time.Duration{t.Initial, t.Idle, t.Write, s.cfg.requestTimeout()} {
		if d > 0 && (c.tick == 0 || d/4 < c.tick) {
			c.tick = max(d/4, time.Millisecond)
		}
	}
	c.dec.SetMaxStringLength(s.cfg.maxHeaderBytes())
	c.rfr.SetMaxReadFrameSize(16 << 10)
	c.recvWindow = h2ConnWindow
	c.sendWindow, c.peerWindow, c.peerFrame = 65535, 65535, 16<<10
	return c
}

// end runs when the reader stops: every stream still open ends, and what
// waits on them learns it.
func (c *h2conn) end() {
	var completions []h2done
	c.mu.Lock()
	if c.broken == nil {
		c.broken = nm.ErrCanceled
	}
	err := c.broken
	for _, st := range c.streams {
		if d, ok := c.closeLocked(st, err); ok {
			completions = append(completions, d)
		}
	}
	c.mu.Unlock()
	close(c.quit)
	<-c.writerDone
	c.detachClosed()
	for _, d := range completions {
		c.complete(d, err)
	}
}

// fail ends the connection with a protocol error: GOAWAY with code, if it
// can still be written.
func (c *h2conn) fail(code http2.ErrCode) {
	c.stats.RecvFailed.Add(1)
	c.goAway(code)
}

// goAway ends the connection: GOAWAY with code is written (the reader
// waits for the writer, within its write timeout), our side is closed, and
// what the peer still sends is read and dropped for a second at most, so
// that closing does not reset the connection before the peer has read the
// GOAWAY.
func (c *h2conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	c.wfr.WriteGoAway(c.lastID, code, nil)
	c.mu.Unlock()
	c.closeGracefully()
}

// closeGracefully writes what is queued (the reader waits for the writer,
// within its write timeout), closes our side, and reads and drops what the
// peer still sends for a second at most, so that closing does not reset
// the connection before the peer has read the last frames.
func (c *h2conn) closeGracefully() {
	c.mu.Lock()
	flushed := make(chan struct{})
	c.flushed = flushed
	c.wakeLocked()
	c.mu.Unlock()
	<-flushed
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
}

// frame handles one frame read; an error ends the connection.
func (c *h2conn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return c.onHeaders(f)
	case *http2.ContinuationFrame:
		return c.onBlock(f.HeaderBlockFragment(), f.HeadersEnded())
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.queueControl(func() { c.wfr.WritePing(true, f.Data) })
		}
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
		}
		c.closeStream(f.StreamID, false, 0)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.stats.RecvFailed.Add(1)
			c.resetStream(f.StreamID, http2.ErrCodeProtocol) // depends on itself
		}
	case *http2.GoAwayFrame:
		c.goaway = true
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // other PRIORITY frames and unknown frames are ignored
}

// queueControl writes a control frame with write under c.mu; the output
// bound is checked by the reader after the frame that provoked it.
func (c *h2conn) queueControl(write func()) {
	c.mu.Lock()
	write()
	c.checkOutLocked()
	c.mu.Unlock()
}

func (c *h2conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.detachClosed()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			delta := int32(s.Val) - c.peerWindow
			c.peerWindow = int32(s.Val)
			for _, st := range c.streams {
				if int64(st.sendWindow)+int64(delta) > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wfr.WriteSettingsAck()
	c.unblockLocked()
	c.checkOutLocked()
	return nil
}

func (c *h2conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID > c.lastID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
	}
	var d h2done
	failed := false
	c.mu.Lock()
	if f.StreamID == 0 {
		if int64(c.sendWindow)+int64(f.Increment) > 1<<31-1 {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWindow += int32(f.Increment)
	} else if st := c.streams[f.StreamID]; st != nil {
		if int64(st.sendWindow)+int64(f.Increment) > 1<<31-1 {
			c.rstLocked(st.id, http2.ErrCodeFlowControl)
			d, failed = c.closeLocked(st, nm.ErrCanceled)
		} else {
			st.sendWindow += int32(f.Increment)
		}
	}
	c.unblockLocked()
	c.mu.Unlock()
	c.detachClosed()
	if failed {
		c.complete(d, nm.ErrCanceled)
	}
	return nil
}

// onHeaders starts a header block: a new stream's request, or a trailer.
func (c *h2conn) onHeaders(f *http2.HeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.blk = h2block{id: id, endStream: f.StreamEnded()}
	if id <= c.lastID {
		c.mu.Lock()
		st := c.streams[id]
		ours := st == nil && c.wasResetLocked(id)
		c.mu.Unlock()
		switch {
		case st != nil && st.state == stBody:
			if !f.StreamEnded() {
				return http2.ConnectionError(http2.ErrCodeProtocol) // a trailer must end its stream
			}
			c.blk.trailer = st
		case st != nil: // the client ended its side already
			c.blk.discard, c.blk.reset, c.blk.rst = true, true, http2.ErrCodeStreamClosed
		case ours: // late, after our reset: ignored
			c.blk.discard = true
		default:
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
	} else if f.HasPriority() && f.Priority.StreamDep == id {
		c.blk.discard, c.blk.reset, c.blk.rst = true, true, http2.ErrCodeProtocol // depends on itself
	}
	c.lastID = max(c.lastID, id)
	c.dec.SetEmitEnabled(!c.blk.discard)
	return c.onBlock(f.HeaderBlockFragment(), f.HeadersEnded())
}

// onBlock decodes a fragment of the header block; at its end, the request
// is handled.
func (c *h2conn) onBlock(frag []byte, end bool) error {
	c.blk.size += len(frag)
	if c.blk.size > 2*c.s.cfg.maxHeaderBytes()+16<<10 {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm) // CONTINUATION flood
	}
	if _, err := c.dec.Write(frag); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	switch b := &c.blk; {
	case b.trailer != nil && b.malformed:
		c.stats.RecvFailed.Add(1)
		c.reset(b.trailer, http2.ErrCodeProtocol)
	case b.trailer != nil:
		b.trailer.remoteOpen = false
		c.endBody(b.trailer)
	case b.reset:
		c.stats.RecvFailed.Add(1)
		c.resetStream(b.id, b.rst)
	case !b.discard:
		c.request()
	}
	return nil
}

// emit takes one decoded header field.
func (c *h2conn) emit(f hpack.HeaderField) {
	b := &c.blk
	b.list += len(f.Name) + len(f.Value) + 32
	if b.list > c.s.cfg.maxHeaderBytes() {
		b.tooBig = true
		c.dec.SetEmitEnabled(false)
		return
	}
	if b.trailer != nil {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			b.malformed = true // no pseudo-field in a trailer
		}
		return
	}
	if len(f.Name) > 0 && f.Name[0] == ':' {
		if b.regular {
			b.malformed = true
		}
		var dst *string
		switch f.Name {
		case ":method":
			dst = &b.method
		case ":path":
			dst = &b.path
		case ":scheme":
			dst = &b.scheme
		case ":authority":
			return
		default:
			b.malformed = true
			return
		}
		if *dst != "" || f.Value == "" {
			b.malformed = true
		}
		*dst = f.Value
		return
	}
	b.regular = true
	switch f.Name {
	case "content-type":
		b.ctype = f.Value
		b.nctype++
	case "content-length":
		b.clen = f.Value
		b.nclen++
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		b.malformed = true
	case "te":
		if f.Value != "trailers" {
			b.malformed = true
		}
	default:
		if !lowercase(f.Name) {
			b.malformed = true
		}
	}
}

func lowercase(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return false
		}
	}
	return s != ""
}

// request handles a new stream's complete header block.
func (c *h2conn) request() {
	b := &c.blk
	switch {
	case b.malformed || b.method == "" || b.path == "" || b.scheme == "":
		c.stats.RecvFailed.Add(1)
		c.resetStream(b.id, http2.ErrCodeProtocol)
		return
	case c.goaway || c.drained:
		c.resetStream(b.id, http2.ErrCodeRefusedStream)
		return
	}
	c.mu.Lock()
	if len(c.streams) >= c.s.cfg.maxStreams() {
		c.rstLocked(b.id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return
	}
	st := c.newStreamLocked(b.id)
	st.remoteOpen = !b.endStream
	c.mu.Unlock()
	c.started = true
	c.requests++
	c.quietFrames = 0
	c.stats.Received.Add(1)
	// An error found in the headers is answered once the request ends
	// (its body is dropped meanwhile, within the stream's window), as a
	// request is whole only then; except a body declared too large.
	st.get = b.method == http.MethodGet
	code := 0
	if b.tooBig {
		code = http.StatusRequestHeaderFieldsTooLarge
	} else {
		path, rawQuery, _ := strings.Cut(b.path, "?")
		if strings.IndexByte(path, '%') >= 0 {
			path, _ = url.PathUnescape(path) // a bad escape is a path served nowhere
		}
		st.ep, code = c.s.route(len(b.path), path, b.method)
		switch {
		case code != 0:
		case st.get:
			st.msg, code = decodeGET(st.h, rawQuery)
		case b.nctype != 1 || !isMessageTypeValue(b.ctype):
			code = http.StatusUnsupportedMediaType
		}
	}
	if !st.get && b.nclen > 0 {
		n, err := strconv.ParseInt(b.clen, 10, 64)
		switch {
		case b.nclen > 1 || err != nil || n < 0:
			c.stats.RecvFailed.Add(1)
			c.reset(st, http2.ErrCodeProtocol)
			return
		case n > MaxSize && code == 0:
			c.refuse(st, http.StatusRequestEntityTooLarge)
			return
		}
		st.clen = n
	}
	st.status = code
	if b.endStream {
		c.endBody(st)
		return
	}
	if d := c.s.initial; d > 0 {
		st.deadline = time.Now().Add(d)
	}
}

// onData takes a DATA frame: flow control, then a request's body.
func (c *h2conn) onData(f *http2.DataFrame) error {
	size := int32(f.Header().Length)
	c.recvWindow -= size
	if c.recvWindow < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvUnacked += size
	if c.recvUnacked >= h2ConnWindow/4 {
		n := c.recvUnacked
		c.recvWindow += n
		c.recvUnacked = 0
		c.queueControl(func() { c.wfr.WriteWindowUpdate(0, uint32(n)) })
	}
	if f.StreamID > c.lastID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	ours := st == nil && c.wasResetLocked(f.StreamID)
	c.mu.Unlock()
	switch {
	case ours:
		return nil // late, after our reset: ignored
	case st == nil || st.state != stBody:
		// Closed, or the client ended its side already.
		c.stats.RecvFailed.Add(1)
		c.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	st.recvWindow -= size
	data := f.Data()
	keep := !st.get && st.status == 0
	switch {
	case st.recvWindow < 0:
		c.stats.RecvFailed.Add(1)
		c.reset(st, http2.ErrCodeFlowControl)
		return nil
	case st.clen >= 0 && int64(st.n+len(data)) > st.clen:
		c.stats.RecvFailed.Add(1)
		c.reset(st, http2.ErrCodeProtocol) // a body longer than declared
		return nil
	case keep && st.n+len(data) > MaxSize:
		c.refuse(st, http.StatusRequestEntityTooLarge)
		return nil
	}
	if keep && len(data) > 0 {
		if !c.s.chargeBody(&c.body, len(data)) {
			c.stats.TooLarge.Add(1)
			logBodyCap(c.s.m, c.hc.peer)
			c.refuse(st, http.StatusRequestEntityTooLarge)
			return nil
		}
		st.charged += len(data)
		copy(growBody(st.h, st.n+len(data), st.n)[st.n:], data)
	}
	st.n += len(data)
	if f.StreamEnded() {
		st.remoteOpen = false
		c.endBody(st)
	}
	return nil
}

// endBody handles a POST whose body is complete.
func (c *h2conn) endBody(st *h2stream) {
	c.unchargeLocked(st)
	switch {
	case st.clen >= 0 && int64(st.n) != st.clen:
		c.stats.RecvFailed.Add(1)
		c.reset(st, http2.ErrCodeProtocol)
	case st.status != 0:
		c.refuse(st, st.status)
	case st.get:
		c.dispatch(st, st.msg)
	case st.n == 0:
		c.refuse(st, http.StatusBadRequest)
	default:
		c.dispatch(st, (*st.h.Buf())[:st.n])
	}
}

// dispatch delivers a request to its endpoint, after waiting for an
// in-flight place.
// dispatch queues a complete request for delivery; it is delivered at
// once if the connection is below its in-flight bound, and otherwise when
// a place comes free, while the reader goes on reading frames (so that a
// reset or a WINDOW_UPDATE is seen while requests wait).
func (c *h2conn) dispatch(st *h2stream, msg []byte) {
	if checkRequest(msg) != nil {
		c.refuse(st, http.StatusBadRequest)
		return
	}
	st.msg = msg
	c.mu.Lock()
	st.state = stReady
	c.readyN++
	c.mu.Unlock()
	c.ready = append(c.ready, st)
	c.deliverReady()
}

// deliverReady delivers the waiting requests while there are in-flight
// places; on the reader only.
func (c *h2conn) deliverReady() {
	for c.readyAt < len(c.ready) {
		st := c.ready[c.readyAt]
		c.mu.Lock()
		if st.state == stReady && c.inFlight >= c.s.cfg.maxInFlight() {
			c.mu.Unlock()
			return
		}
		c.ready[c.readyAt] = nil
		c.readyAt++
		c.readyN--
		if st.state != stReady { // reset meanwhile
			c.mu.Unlock()
			continue
		}
		c.inFlight++
		st.state, st.slot, st.owned = stWaiting, true, false
		st.deadline = time.Time{}
		if d := c.s.cfg.requestTimeout(); d > 0 {
			st.deadline = time.Now().Add(d) // the request timeout
		}
		c.mu.Unlock()
		c.deliver(st)
	}
	c.ready, c.readyAt = c.ready[:0], 0
}

// deliver hands a request to its endpoint if its channel has room; a
// request that cannot be delivered is answered at once: HTTPConfig's
// ShedStatus when the channel is full (counted Shed), 503 when the
// endpoints were replaced or the listener closes.
func (c *h2conn) deliver(st *h2stream) {
	st.h.SetMeter(c.s.meter)
	st.h.Measure(c.lat)
	ok, full := st.ep.offer(c.hc.shard, nm.Event{Handle: nm.Handle(st.h), Data: st.msg})
	if ok {
		return
	}
	code := http.StatusServiceUnavailable
	if full {
		c.stats.Shed.Add(1)
		logShed(c.s.m, core.HTTP, c.hc.peer)
		code = c.s.cfg.shedStatus()
	}
	c.mu.Lock()
	if st.state != stWaiting { // ended meanwhile
		c.mu.Unlock()
		st.h.Detach()
		return
	}
	c.releaseSlotLocked(st)
	st.owned = true // not delivered: the handle is still ours
	c.respondLocked(st, code)
	c.mu.Unlock()
	c.detachClosed()
}

// refuse answers st with an error status.
func (c *h2conn) refuse(st *h2stream, code int) {
	c.mu.Lock()
	c.respondLocked(st, code)
	c.mu.Unlock()
	c.detachClosed()
}

// reset resets st, which has not been delivered.
func (c *h2conn) reset(st *h2stream, code http2.ErrCode) {
	c.mu.Lock()
	c.rstLocked(st.id, code)
	c.closeLocked(st, nm.ErrCanceled)
	c.mu.Unlock()
	c.detachClosed()
}

// resetStream resets stream id, whatever it is.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode) { c.closeStream(id, true, code) }

// closeStream ends stream id, if open, and fails a reply in progress;
// send: tell the peer with RST_STREAM(code) (not for the peer's own reset).
func (c *h2conn) closeStream(id uint32, send bool, code http2.ErrCode) {
	c.mu.Lock()
	if send {
		c.rstLocked(id, code)
	} else {
		c.forgetResetLocked(id) // the peer knows it is closed: later frames are errors
	}
	var d h2done
	ok := false
	if st := c.streams[id]; st != nil {
		d, ok = c.closeLocked(st, nm.ErrCanceled)
	}
	c.mu.Unlock()
	c.detachClosed()
	if ok {
		c.complete(d, nm.ErrCanceled)
	}
}

var (
	textPlain  = "text/plain; charset=utf-8"
	statusBody [600][]byte
)

func init() {
	for code := 400; code < len(statusBody); code++ {
		statusBody[code] = []byte(http.StatusText(code) + "\n")
	}
}

// respondLocked answers st with an error status, closing the stream; st's
// handle is the reader's (st was not delivered).
func (c *h2conn) respondLocked(st *h2stream, code int) {
	c.stats.Dropped.Add(1)
	body := statusBody[code]
	c.hbuf.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
	c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: textPlain})
	c.enc.WriteField(hpack.HeaderField{Name: "x-content-type-options", Value: "nosniff"})
	if code == http.StatusMethodNotAllowed {
		c.enc.WriteField(hpack.HeaderField{Name: "allow", Value: allowed[0]})
	}
	c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
	c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	st.pending, st.done = body, nil
	st.state = stSending
	c.pushLocked(st)
	c.checkOutLocked()
}

// rstLocked queues RST_STREAM for stream id.
func (c *h2conn) rstLocked(id uint32, code http2.ErrCode) {
	c.noteResetLocked(id)
	c.wfr.WriteRSTStream(id, code)
	c.cuts = append(c.cuts, len(c.out))
	c.checkOutLocked()
}

// noteResetLocked remembers that we reset stream id: frames the client
// sent before it learned of it are ignored (RFC 9113 5.1), not taken as
// errors.
func (c *h2conn) noteResetLocked(id uint32) {
	c.resets[c.resetAt%len(c.resets)] = id
	c.resetAt++
}

func (c *h2conn) forgetResetLocked(id uint32) {
	for i, r := range c.resets {
		if r == id {
			c.resets[i] = 0
		}
	}
}

func (c *h2conn) wasResetLocked(id uint32) bool {
	for _, r := range c.resets {
		if r == id {
			return true
		}
	}
	return false
}

func (c *h2conn) releaseSlotLocked(st *h2stream) {
	if st.slot {
		st.slot = false
		c.inFlight--
		if c.readyN > 0 {
			c.pokeLocked()
		}
	}
}

// closeLocked ends st with err: it leaves the streams, gives back its
// in-flight place, and returns its reply's completion if one was waiting
// for window. An undelivered stream's handle is detached by detachClosed.
func (c *h2conn) closeLocked(st *h2stream, err error) (h2done, bool) {
	if st.state == stClosed {
		return h2done{}, false
	}
	var d h2done
	ok := false
	if st.owned {
		st.owned = false
		c.detachAfter = append(c.detachAfter, st)
	}
	if st.state == stSending && st.replied && st.pending != nil { // not all framed: it fails
		d, ok = h2done{done: st.done}, st.done != nil
		c.stats.SendFailed.Add(1)
	}
	c.releaseSlotLocked(st)
	c.holdLocked(st, 0)
	c.unchargeLocked(st)
	st.state, st.err, st.pending, st.done = stClosed, err, nil, nil
	if st.blocked {
		c.dropBlockedLocked(st)
	}
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
		st.unref()
		if len(c.streams) == 0 && c.s.draining.Load() {
			c.pokeLocked() // the reader ends the drained connection
		}
	}
	return d, ok
}

// detachClosed drops the reader's handle references of the undelivered
// streams closed under the lock.
func (c *h2conn) detachClosed() {
	c.mu.Lock()
	list := c.detachAfter
	c.detachAfter = nil
	c.mu.Unlock()
	for _, st := range list {
		st.h.Detach()
	}
}

func (c *h2conn) dropBlockedLocked(st *h2stream) {
	st.blocked = false
	for i, b := range c.blocked {
		if b == st {
			c.blocked = append(c.blocked[:i], c.blocked[i+1:]...)
			return
		}
	}
}

// pushLocked frames as much of st's pending reply as the windows allow;
// once all of it is framed, the stream ends.
func (c *h2conn) pushLocked(st *h2stream) {
	for len(st.pending) > 0 {
		n := min(int32(len(st.pending)), c.sendWindow, st.sendWindow, int32(c.peerFrame))
		if n <= 0 {
			if !st.blocked {
				st.blocked = true
				st.since = time.Now()
				c.blocked = append(c.blocked, st)
			}
			c.holdLocked(st, len(st.pending))
			return
		}
		c.wfr.WriteData(st.id, int(n) == len(st.pending), st.pending[:n])
		c.sendWindow -= n
		st.sendWindow -= n
		st.pending = st.pending[n:]
	}
	c.cuts = append(c.cuts, len(c.out))
	end := len(c.out)
	if st.remoteOpen {
		// Complete response, incomplete request: the client may stop
		// sending (RFC 9113 8.1). In a record of its own: curl takes a
		// reset found with the response as a failed request.
		c.noteResetLocked(st.id)
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
		c.cuts = append(c.cuts, len(c.out))
	}
	if st.replied {
		c.dones = append(c.dones, h2done{st.done, end})
	}
	c.holdLocked(st, 0)
	st.pending, st.done = nil, nil
	if st.blocked {
		c.dropBlockedLocked(st)
	}
	c.closeLocked(st, nm.ErrClosed)
}

// unchargeLocked takes st's body bytes off the counts. Only the reader
// charges, and only streams whose body is coming, which only the reader
// closes.
func (c *h2conn) unchargeLocked(st *h2stream) {
	if st.charged != 0 {
		c.s.unchargeBody(&c.body, st.charged)
		st.charged = 0
	}
}

// holdLocked records that n bytes of st's reply wait for window.
func (c *h2conn) holdLocked(st *h2stream, n int) {
	c.held += n - st.held
	st.held = n
}

// unblockLocked frames the replies that were waiting for window.
func (c *h2conn) unblockLocked() {
	for i := 0; i < len(c.blocked) && c.sendWindow > 0; {
		st := c.blocked[i]
		c.pushLocked(st)
		if st.blocked {
			i++ // still short of its stream's window
		}
	}
}

// quiet reports whether no stream is open; if one is, the count of quiet
// frames starts again.
func (c *h2conn) quiet() bool {
	c.mu.Lock()
	open := len(c.streams) > 0
	c.mu.Unlock()
	if open {
		c.quietFrames = 0
	}
	return !open
}

// onTick runs the timeouts on the reader's goroutine, when its read
// deadline passes; false ends the connection.
func (c *h2conn) onTick(now time.Time) bool {
	if c.requests != c.seen {
		c.seen = c.requests
		c.quietSince = now
	}
	limit := c.s.initial
	if c.started {
		limit = c.s.idle
	}
	var late []h2done
	c.mu.Lock()
	for _, st := range c.streams {
		switch {
		case st.state == stBody && !st.deadline.IsZero() && now.After(st.deadline):
			c.respondLocked(st, http.StatusRequestTimeout)
		case st.state == stWaiting && !st.replied && !st.deadline.IsZero() && now.After(st.deadline):
			// Delivered and left unanswered: its place comes back.
			c.stats.Expired.Add(1)
			c.rstLocked(st.id, http2.ErrCodeInternal)
			if d, ok := c.closeLocked(st, nm.ErrTimedOut); ok {
				late = append(late, d)
			}
		case st.blocked && c.write > 0 && now.Sub(st.since) > c.write:
			c.stats.WriteTimeouts.Add(1)
			c.rstLocked(st.id, http2.ErrCodeCancel)
			if d, ok := c.closeLocked(st, nm.ErrTimedOut); ok {
				late = append(late, d)
			}
		}
	}
	open := len(c.streams) > 0
	if open {
		c.quietSince = now
	}
	c.mu.Unlock()
	c.detachClosed()
	for _, d := range late {
		c.complete(d, nm.ErrTimedOut)
	}
	if !open && limit > 0 && now.Sub(c.quietSince) >= limit {
		c.goAway(http2.ErrCodeNo)
		return false
	}
	c.kick()
	return true
}
