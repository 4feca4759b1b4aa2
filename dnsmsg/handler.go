package dnsmsg

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// A Handler answers the requests that Serve takes from a listener.
//
// ServeDNS runs on one of Serve's workers. It answers with Reply or
// ReplyWire, or not at all: the request is then dropped, unless its message
// could not be parsed (Msg returned an error), which Serve answers with
// FORMERR. A panic in ServeDNS is recovered, logged and counted
// (nm.Totals.Panics), and the request is answered with SERVFAIL if it had
// no answer yet; the server goes on.
//
// The request is released when ServeDNS returns: from then on every use
// of it fails (see Request), so a handler that answers from another
// goroutine waits for that goroutine before it returns.
type Handler interface {
	ServeDNS(r *Request)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(r *Request)

// ServeDNS calls f(r).
func (f HandlerFunc) ServeDNS(r *Request) { f(r) }

// ServeConfig configures Serve. The zero value is ready to use.
type ServeConfig struct {
	// Workers is how many requests are handled at once: Serve starts that
	// many goroutines, each taking requests from the channel in turn.
	// Requests beyond wait in the listener's channel; when it is full the
	// transport sheds them (UDP drops them, streams push back or refuse).
	// Handlers that wait on the network (forwarders) want more workers
	// than handlers that only compute. If zero, 16 per CPU
	// (runtime.GOMAXPROCS).
	Workers int
	// Logger receives handler panics. If nil, the manager's logger, whose
	// rate limit keeps a client that makes a handler panic from flooding
	// the log; a Logger given here is used as it is.
	Logger *slog.Logger
}

func (c *ServeConfig) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return 16 * runtime.GOMAXPROCS(0)
}

// Serve handles the requests of a listener's channel (Listener.Requests,
// or an endpoint's channel of an HTTPListener) with h until the channel is
// closed, then waits for the handlers still running and returns: nil after
// the listener's normal end (nm.ErrCanceled), else the final event's error.
// ctx is the parent of every request's context; when it ends, the
// requests' contexts end too, but Serve goes on until the listener ends:
// stop a server with its listener's Shutdown (or Close).
//
// Serve replaces the loop of the channel API for the common case; the
// channel stays for those who want it.
func Serve(ctx context.Context, reqs <-chan nm.Event, h Handler, cfg ServeConfig) error {
	var (
		wg       sync.WaitGroup
		finalMu  sync.Mutex
		final    error
		nworkers = cfg.workers()
	)
	for range nworkers {
		wg.Go(func() {
			for ev := range reqs {
				if ev.Err != nil {
					finalMu.Lock()
					final = ev.Err
					finalMu.Unlock()
					continue // the channel closes next
				}
				serveOne(ctx, ev, h, &cfg)
			}
		})
	}
	wg.Wait()
	if errors.Is(final, nm.ErrCanceled) {
		return nil
	}
	return final
}

// serveOne runs the handler for one request and releases it.
func serveOne(base context.Context, ev nm.Event, h Handler, cfg *ServeConfig) {
	r := newRequest(base, ev)
	defer r.release()
	defer r.recoverPanic(cfg)
	h.ServeDNS(r)
}

// Request is one DNS request handed to a Handler. It is valid until the
// handler returns: after that Msg, Reply and ReplyWire return
// nm.ErrReleased and Wire panics, every time, so a late answer can never
// reach another client. A Request is not recycled. Its methods are safe
// for concurrent use.
type Request struct {
	h         nm.Handle
	transport nm.Transport
	local     netip.AddrPort
	peer      netip.AddrPort
	base      context.Context

	mu       sync.Mutex
	wire     []byte // guarded by mu; the handle's until release
	released bool   // guarded by mu
	replies  int    // replies sent; guarded by mu
	parsed   bool   // guarded by mu
	msg      *dns.Msg
	parseErr error
	ctx      context.Context    // made on first use; guarded by mu
	cancel   context.CancelFunc // guarded by mu
}

func newRequest(base context.Context, ev nm.Event) *Request {
	h := ev.Handle
	return &Request{
		h: h, transport: transportOf(h), local: h.LocalAddr(), peer: h.PeerAddr(),
		base: base, wire: ev.Data,
	}
}

// transportOf tells which transport a request handle came from.
func transportOf(h nm.Handle) nm.Transport {
	switch s := core.Handle(h).Socket().(type) {
	case *streamConn:
		if _, ok := stream.TLSState(nm.Handle(s.h)); ok {
			return nm.TLS
		}
		return nm.TCP
	case *h2stream, *httpRequest:
		return nm.HTTP
	case *doqStream:
		return nm.QUIC
	}
	return nm.UDP
}

// Transport returns the transport the request came over: nm.UDP, nm.TCP,
// nm.TLS (DNS over TLS), nm.HTTP (DNS over HTTPS) or nm.QUIC (DNS over
// QUIC).
func (r *Request) Transport() nm.Transport { return r.transport }

// LocalAddr returns the address the client sent the request to (as a PROXY
// header gave it, behind a load balancer).
func (r *Request) LocalAddr() netip.AddrPort { return r.local }

// PeerAddr returns the client's address (as a PROXY header gave it, behind
// a load balancer).
func (r *Request) PeerAddr() netip.AddrPort { return r.peer }

// Wire returns the request message in wire format. The bytes belong to the
// request: they may be read, and changed in place, until the handler
// returns. Wire panics if called after that.
func (r *Request) Wire() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		panic("dnsmsg: Request.Wire called after its handler returned")
	}
	return r.wire
}

// Msg returns the request parsed with github.com/miekg/dns, parsing it on
// the first call. A request that does not parse gets an error here, and
// FORMERR from Serve if the handler does not answer it. After the handler
// returned, Msg returns nm.ErrReleased.
func (r *Request) Msg() (*dns.Msg, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return nil, nm.ErrReleased
	}
	if !r.parsed {
		r.parsed = true
		r.msg, r.parseErr = Parse(r.wire)
		if r.parseErr != nil {
			r.parseErr = errors.Join(nm.ErrBadMessage, r.parseErr)
		}
	}
	return r.msg, r.parseErr
}

// Context returns the request's context: it ends when the handler returns,
// when the conversation behind the request ends (its connection closed, by
// the peer, a timeout, or the listener's Close or Shutdown deadline), or
// when Serve's context ends.
func (r *Request) Context() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx == nil {
		r.ctx, r.cancel = context.WithCancel(r.base)
		if r.released {
			r.cancel()
		} else if done := conversationDone(r.h); done != nil {
			ctx, cancel := r.ctx, r.cancel
			go func() {
				select {
				case <-done:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
	}
	return r.ctx
}

// conversationDone returns a channel closed when the conversation behind a
// request handle ends, or nil if it has none.
func conversationDone(h nm.Handle) <-chan struct{} {
	if s, ok := core.Handle(h).Socket().(interface {
		Done(core.Handle) <-chan struct{}
	}); ok {
		return s.Done(core.Handle(h))
	}
	return nil
}

// ReplyWire sends the reply b, a DNS message in wire format. b may be
// reused once ReplyWire returns. Over UDP and HTTPS a request takes one
// reply (a second fails with nm.ErrClosed); over TCP and TLS it may take
// several (a zone transfer), sent in order. After the handler returned,
// ReplyWire returns nm.ErrReleased.
func (r *Request) ReplyWire(b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replyLocked(b)
}

func (r *Request) replyLocked(b []byte) error {
	switch {
	case r.released:
		return nm.ErrReleased
	case r.replies > 0 && !r.multi():
		return nm.ErrClosed
	}
	r.replies++
	return r.h.Send(b)
}

// multi reports whether the request's transport takes several replies.
func (r *Request) multi() bool { return r.transport == nm.TCP || r.transport == nm.TLS }

// Reply packs m and sends it as ReplyWire does. Over UDP a reply larger
// than the client can take (its EDNS buffer size, or 512 bytes) is
// truncated first (dns.Msg.Truncate, which sets TC), as RFC 1035 and RFC
// 6891 ask.
func (r *Request) Reply(m *dns.Msg) error {
	if r.transport == nm.UDP {
		m.Truncate(r.udpSize())
	}
	bp := packBufs.Get().(*[]byte)
	defer packBufs.Put(bp)
	b, err := m.PackBuffer(*bp)
	if err != nil {
		return err
	}
	if cap(b) <= maxPooledPack {
		*bp = b[:0]
	}
	return r.ReplyWire(b)
}

// udpSize returns how large a UDP reply the client takes.
func (r *Request) udpSize() int {
	q, err := r.Msg()
	if err != nil {
		return dns.MinMsgSize
	}
	if opt := q.IsEdns0(); opt != nil {
		return max(dns.MinMsgSize, int(opt.UDPSize()))
	}
	return dns.MinMsgSize
}

const maxPooledPack = 64 << 10

var packBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1232); return &b }}

// KeepaliveTimeout returns, for requests over TCP or TLS, the idle timeout
// the connection now has: the value for an EDNS tcp-keepalive option (RFC
// 7828) in the reply. It returns false for other transports or after the
// handler returned.
func (r *Request) KeepaliveTimeout() (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return 0, false
	}
	return KeepaliveTimeout(r.h)
}

// closeConversation ends the conversation behind the request: the
// connection over TCP and TLS, the stream over HTTPS; nothing over UDP.
func (r *Request) closeConversation() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return nm.ErrReleased
	}
	if r.transport != nm.UDP {
		r.h.Close()
	}
	return nil
}

// recoverPanic answers SERVFAIL for a handler that panicked, logs and
// counts it.
func (r *Request) recoverPanic(cfg *ServeConfig) {
	p := recover()
	if p == nil {
		return
	}
	countersOf(core.Handle(r.h), core.Transport(r.transport)).Panics.Add(1)
	log := cfg.Logger
	if log == nil {
		log = core.Handle(r.h).Shard().Manager().Logger()
	}
	log.Error("dnsmsg: handler panicked", "transport", r.transport, "peer", r.peer,
		"panic", p, "stack", string(debug.Stack()))
	r.answerIfSilent(dns.RcodeServerFailure)
}

// answerIfSilent answers with rcode if nothing was sent yet.
func (r *Request) answerIfSilent(rcode int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released || r.replies > 0 {
		return
	}
	var buf [maxRefusal]byte
	r.replyLocked(appendRefusal(buf[:0], r.wire, rcode))
}

// release ends the request: FORMERR for an unparsable one nobody answered,
// then the handle is released and the context canceled.
func (r *Request) release() {
	r.mu.Lock()
	formerr := r.parseErr != nil && r.replies == 0
	r.mu.Unlock()
	if formerr {
		r.answerIfSilent(dns.RcodeFormatError)
	}
	r.mu.Lock()
	r.released = true
	r.wire = nil
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.h.Detach()
}
