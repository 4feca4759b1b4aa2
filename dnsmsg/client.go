package dnsmsg

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// DefaultReadTimeout is the read timeout of a client when ClientConfig
// leaves it zero.
const DefaultReadTimeout = 5 * time.Second

// recentIDs is how many of the last query IDs a client accepts replies for.
const recentIDs = 64

// ClientConfig configures a client Conn, or a Client and every connection
// it opens. The zero value is ready to use; a config must not be modified
// after use.
type ClientConfig struct {
	// Name names a Client's upstreams in the manager's statistics
	// (nm.Manager.Endpoints, nmprom's name label), next to each upstream's
	// address. If empty, the address.
	Name string
	// ReadTimeout bounds each Read of a Conn, and each query of a Client
	// (its context's deadline wins when sooner). If zero,
	// DefaultReadTimeout (5 s); if negative (nm.NoTimeout), reads wait
	// until a reply, the context's end or the close.
	ReadTimeout time.Duration
	// MaxUDPSize is the largest UDP reply accepted; longer ones are
	// discarded and counted. If zero, 65535 bytes.
	MaxUDPSize int
	// ProxyHeader, if set, is sent as a PROXY protocol v2 header (see
	// proxyproto.Header.Append): in front of every UDP datagram, or first
	// on a TCP, TLS or DoH connection (before TLS unless
	// Stream.ProxyInTLS; Stream.ProxyHeader, if set, wins for streams).
	ProxyHeader []byte
	// HTTPGet makes a DoH Conn send queries with GET rather than POST.
	HTTPGet bool
	// MaxInFlight bounds the queries in flight on a DoH Conn (Send waits
	// at the bound), and on each TCP, TLS and DoH connection of a Client
	// (a query waits for a place, within its context). If zero,
	// DefaultHTTPInFlight (100).
	MaxInFlight int
	// TLS configures a Client's tls:// (ALPN "dot" unless NextProtos is
	// set) and https:// (ALPN "h2") upstreams; the server name is the
	// upstream's host unless set. If nil, the system's roots are trusted.
	TLS *tls.Config
	// MaxConns is how many connections a Client keeps at most to each
	// TCP, TLS or DoH upstream; queries share them, pipelined. If zero,
	// DefaultMaxConns (2).
	MaxConns int
	// MaxFailures is how many queries to an upstream may fail in a row
	// (no connection, connection lost, no reply within ReadTimeout, HTTP
	// 5xx) before a Client marks it down: for Backoff, calls to it fail at
	// once with ErrUpstreamDown; then one query probes it, and each failed
	// probe doubles the backoff, up to MaxBackoff. If zero,
	// DefaultMaxFailures (5); if negative, upstreams are never marked
	// down. Backoff defaults to DefaultBackoff (1 s), MaxBackoff to
	// DefaultMaxBackoff (30 s).
	MaxFailures         int
	Backoff, MaxBackoff time.Duration
	// Stream configures TCP and TLS connections: the connect timeout is
	// Timeouts.Initial, the write timeout Timeouts.Write (see stream.Config;
	// its Read timeout and Consume are the Conn's own and ignored).
	Stream stream.Config
}

// stream returns the stream configuration, with the PROXY header.
func (c *ClientConfig) stream() stream.Config {
	sc := c.Stream
	if sc.ProxyHeader == nil {
		sc.ProxyHeader = c.ProxyHeader
	}
	return sc
}

func (c *ClientConfig) readTimeout() time.Duration {
	switch {
	case c.ReadTimeout < 0:
		return nm.NoTimeout
	case c.ReadTimeout == 0:
		return DefaultReadTimeout
	}
	return c.ReadTimeout
}

// Conn is a client conversation with one DNS server: one socket or
// connection, driven by its user. For queries from many goroutines, use a
// Client, which pools connections and matches each reply to its caller.
//
// Send may be called from any goroutine. Exchange is safe for concurrent
// use: concurrent calls take turns, each waiting for its turn within its
// context. Read is for one reader that does not call Exchange meanwhile:
// a reply goes to whichever of them reads it. Each Read yields one event;
// ranging over the channel (for ev := range c.Read()) receives one reply
// and then waits forever: call Read again for each reply.
type Conn struct {
	h    nm.Handle
	once sync.Once
	// turn (buffer 1) is held by the Exchange in progress: a token sent
	// to take the turn, received to give it back.
	turn chan struct{}
	// sendCtx, if set (DoH), sends a query waiting for an in-flight place
	// within ctx.
	sendCtx func(ctx context.Context, b []byte) error

	mu      sync.Mutex
	timeout time.Duration     // the read timeout; guarded by mu
	ids     [recentIDs]uint16 // UDP: IDs of the last queries sent; guarded by mu
	next    int               // where the next ID goes in ids; guarded by mu
	sent    int               // queries sent, up to recentIDs; guarded by mu
	// outstanding counts, on TCP and TLS, the queries sent per ID and not
	// yet answered; guarded by mu. nil on UDP.
	outstanding map[uint16]int32
}

// DialUDP opens a UDP client Conn to the server at addr.
func DialUDP(ctx context.Context, m *nm.Manager, addr string, cfg ClientConfig) (*Conn, error) {
	c := &Conn{timeout: cfg.readTimeout(), turn: make(chan struct{}, 1)}
	h, err := nm.DialUDP(ctx, m, addr, nm.UDPConfig{MaxSize: cfg.MaxUDPSize, Filter: c.checkReply, ProxyHeader: cfg.ProxyHeader})
	if err != nil {
		return nil, err
	}
	h.SetReadTimeout(c.timeout)
	c.h = h
	return c, nil
}

// Handle returns the Conn's handle.
func (c *Conn) Handle() nm.Handle { return c.h }

// checkReply accepts replies to the queries sent on this Conn.
func (c *Conn) checkReply(b []byte, _ netip.AddrPort) error {
	if len(b) < HeaderLen || !IsResponse(b) {
		return nm.ErrBadMessage
	}
	id := ID(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sent := range c.ids[:c.sent] {
		if sent == id {
			return nil
		}
	}
	return nm.ErrBadMessage
}

// Send sends the wire query b; replies to its ID will be accepted.
func (c *Conn) Send(b []byte) error { return c.send(nil, b) }

// send is Send, within ctx if not nil.
func (c *Conn) send(ctx context.Context, b []byte) error {
	if len(b) < HeaderLen {
		return nm.ErrBadMessage
	}
	if len(b) > MaxSize {
		return nm.ErrTooLarge
	}
	id := ID(b)
	c.mu.Lock()
	if c.outstanding != nil {
		c.outstanding[id]++
	} else {
		c.ids[c.next] = id
		c.next = (c.next + 1) % recentIDs
		c.sent = min(c.sent+1, recentIDs)
	}
	c.mu.Unlock()
	send := c.h.Send
	if ctx != nil && c.sendCtx != nil {
		send = func(b []byte) error { return c.sendCtx(ctx, b) }
	}
	if err := send(b); err != nil {
		c.mu.Lock()
		c.forget(id)
		c.mu.Unlock()
		return err
	}
	return nil
}

// takeReply accepts, on TCP and TLS, a reply to a query still outstanding,
// which it marks answered.
func (c *Conn) takeReply(b []byte) bool {
	if len(b) < HeaderLen || !IsResponse(b) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outstanding[ID(b)] == 0 {
		return false
	}
	c.forget(ID(b))
	return true
}

// failed drops a query that failed (DoH: its request did).
func (c *Conn) failed(id uint16) {
	c.mu.Lock()
	c.forget(id)
	c.mu.Unlock()
}

// forget drops one outstanding query with ID id. Called with mu held.
func (c *Conn) forget(id uint16) {
	if n := c.outstanding[id]; n > 1 {
		c.outstanding[id] = n - 1
	} else {
		delete(c.outstanding, id)
	}
}

// Read arms one read and returns the Conn's event channel; see the package
// documentation for what each read yields. The reply's Data is valid until
// the next Read.
func (c *Conn) Read() <-chan nm.Event { return c.h.Read() }

// ReadStop cancels the armed read, if any; a reply that arrives meanwhile
// waits for the next Read.
func (c *Conn) ReadStop() { c.h.ReadStop() }

// SetReadTimeout sets the read timeout, as ClientConfig.ReadTimeout does:
// zero means DefaultReadTimeout, a negative value (nm.NoTimeout) none. A
// read armed now times out d from now; later reads, d after each Read.
func (c *Conn) SetReadTimeout(d time.Duration) {
	d = (&ClientConfig{ReadTimeout: d}).readTimeout()
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
	c.h.SetReadTimeout(d)
}

func (c *Conn) readTimeout() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timeout
}

// Close closes the Conn. A read armed now ends with nm.ErrCanceled; Close
// is idempotent.
func (c *Conn) Close() error {
	c.once.Do(c.h.Detach)
	return nil
}

// Exchange sends q and returns its reply. It waits until the read timeout
// or ctx's deadline, whichever comes first, and returns ctx.Err() if ctx is
// done first. Replies to other queries are skipped. Concurrent calls take
// turns: each waits for its turn within its context.
func (c *Conn) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.turn }()
	if err := c.send(ctx, b); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return c.await(ctx, q.Id)
}

// await reads until the reply with ID id, within the read timeout and ctx.
func (c *Conn) await(ctx context.Context, id uint16) (*dns.Msg, error) {
	timeout := c.readTimeout()
	if dl, ok := ctx.Deadline(); ok && (timeout <= 0 || time.Until(dl) < timeout) {
		timeout = max(time.Until(dl), time.Nanosecond)
	}
	c.h.SetReadTimeout(timeout)
	defer c.h.SetReadTimeout(c.readTimeout())
	for {
		select {
		case ev, ok := <-c.Read():
			if !ok {
				return nil, nm.ErrClosed
			}
			if ev.Err != nil {
				if errors.Is(ev.Err, nm.ErrTimedOut) && ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if re, ok := ev.Err.(*RequestError); ok && re.ID != id {
					continue // another query's failure
				}
				return nil, ev.Err
			}
			r, err := Parse(ev.Data)
			if err != nil {
				return nil, err
			}
			if r.Id == id {
				return r, nil
			}
		case <-ctx.Done():
			c.ReadStop()
			return nil, ctx.Err()
		}
	}
}

// Exchange sends q to the server at addr over UDP, from a new Conn on m,
// and returns the reply; a reply with the TC bit set (truncated) is
// retried over TCP to the same address, as RFC 7766 asks of clients.
func Exchange(ctx context.Context, m *nm.Manager, addr string, q *dns.Msg) (*dns.Msg, error) {
	r, err := exchangeOnce(ctx, m, addr, q, DialUDP)
	if err != nil || !r.Truncated {
		return r, err
	}
	return exchangeOnce(ctx, m, addr, q, DialTCP)
}

func exchangeOnce(ctx context.Context, m *nm.Manager, addr string, q *dns.Msg,
	dial func(context.Context, *nm.Manager, string, ClientConfig) (*Conn, error)) (*dns.Msg, error) {
	c, err := dial(ctx, m, addr, ClientConfig{})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Exchange(ctx, q)
}
