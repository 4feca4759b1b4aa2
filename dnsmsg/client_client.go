package dnsmsg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// errClientClosed is returned by the calls of a closed Client.
var errClientClosed = fmt.Errorf("dnsmsg: client closed: %w", nm.ErrClosed)

// Client sends DNS queries to upstreams named by URI, for any number of
// goroutines at once, as http.Client does for HTTP. For each TCP, TLS
// (DoT) and HTTPS (DoH) upstream it keeps a pool of up to
// ClientConfig.MaxConns connections, dialed when first needed and again
// when one breaks, on which the queries of all callers are pipelined: each
// query goes out under a random wire ID of its own (ID 0 over DoH, where
// the HTTP/2 stream matches the reply, as RFC 8484 recommends) and its
// reply comes back to its caller only, with the caller's ID. Over UDP each
// query goes out from a socket of its own (a fresh source port) with a
// random ID; a truncated reply is asked again over TCP. An upstream that
// keeps failing is marked down for a while (see ClientConfig.MaxFailures).
// A Client keeps what it knows of an upstream (connections, health,
// statistics) while it is used; once it knows more than 16 upstreams, it
// forgets, when it meets a new one, those unused for a minute with no
// failure to remember, so that its memory follows the upstreams in use
// rather than all those ever named.
//
// Every wait of a call (dial, a place among the queries in flight, the
// write, the reply) ends with its context, or with ReadTimeout. The zero
// Client is not usable: make one with NewClient.
type Client struct {
	m   *nm.Manager
	cfg ClientConfig

	mu        sync.Mutex
	upstreams map[string]*upstream // by the URI callers gave; guarded by mu
	closed    bool                 // guarded by mu
}

// NewClient returns a Client whose connections live on m and follow cfg
// (see ClientConfig: its zero value is ready to use). The Client holds no
// connection until its first query; Close, or m's Close, ends them.
func NewClient(m *nm.Manager, cfg ClientConfig) *Client {
	return &Client{m: m, cfg: cfg, upstreams: make(map[string]*upstream)}
}

// Close ends every connection of the Client; queries in flight fail with
// an error matching nm.ErrClosed or nm.ErrCanceled, and so do later calls.
// Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	ups := c.upstreams
	c.upstreams = nil
	c.mu.Unlock()
	for _, u := range ups {
		u.close()
	}
	return nil
}

// Exchange sends q to upstream and returns its reply, whose ID is q's; q
// is not modified. upstream is a URI: "udp://host[:port]" (or a bare
// "host:port"), "tcp://host[:port]", "tls://host[:port]" (DoT, port 853)
// or "https://host[:port]/path" (DoH). It returns an error matching
// nm.ErrTimedOut (and context.DeadlineExceeded) when no reply came within
// ctx's deadline or ReadTimeout, nm.ErrCanceled (and context.Canceled)
// when ctx was canceled, ErrUpstreamDown for an upstream that keeps
// failing, or the error of the connection or of the HTTP request.
func (c *Client) Exchange(ctx context.Context, upstream string, q *dns.Msg) (*dns.Msg, error) {
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	r, err := c.ExchangeWire(ctx, upstream, b)
	if err != nil {
		return nil, err
	}
	return Parse(r)
}

// ExchangeWire is Exchange of a query in wire format: q is not modified
// (nor kept), and the reply, with q's ID, is the caller's.
func (c *Client) ExchangeWire(ctx context.Context, upstream string, q []byte) ([]byte, error) {
	if len(q) < HeaderLen || IsResponse(q) {
		return nil, nm.ErrBadMessage
	}
	if len(q) > MaxSize {
		return nil, nm.ErrTooLarge
	}
	u, err := c.upstream(upstream)
	if err != nil {
		return nil, err
	}
	defer u.release()
	probe, err := u.health.admit(upstream)
	if err != nil {
		return nil, err
	}
	qctx, cancel := c.queryContext(ctx)
	defer cancel()
	start := time.Now()
	r, err := u.exchange(qctx, q)
	if err == nil {
		// Any shard's cell: the caller is on none; the clock spreads them.
		m := c.core()
		u.meter.Latency(m.Shard(int(uint64(start.UnixNano())>>10) % m.Workers())).Observe(time.Since(start))
	}
	u.health.done(probe, outcomeOf(ctx, err))
	return r, err
}

// queryContext bounds a query by ReadTimeout, unless ctx ends sooner.
// The manager's close needs no watching here: it ends every connection,
// and so the queries on them (UDP queries watch it themselves).
func (c *Client) queryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.cfg.readTimeout()
	if dl, ok := ctx.Deadline(); d <= 0 || ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// outcomeOf judges the upstream by a query's error: the caller's context
// ending says nothing about it.
func outcomeOf(ctx context.Context, err error) outcome {
	switch {
	case err == nil:
		return healthy
	case ctx.Err() != nil, errors.Is(err, nm.ErrClosed), errors.Is(err, nm.ErrShuttingDown):
		return neutral
	}
	var re *RequestError
	if errors.As(err, &re) && re.Status < 500 && re.Status != 0 && re.Err == nil {
		return neutral // the upstream refused this query, and said so
	}
	return failed
}

// keptUpstreams is how many upstreams a Client knows before it looks for
// some to forget; upstreamIdle is how long one must have gone unused.
const keptUpstreams = 16

var upstreamIdle = time.Minute

// upstream returns the state of the upstream named s, made on first use,
// for a call that releases it when it is done.
func (c *Client) upstream(s string) (*upstream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClientClosed
	}
	if u := c.upstreams[s]; u != nil {
		u.users.Add(1)
		return u, nil
	}
	if len(c.upstreams) >= keptUpstreams {
		c.forget(core.Now())
	}
	t, err := parseUpstream(s)
	if err != nil {
		return nil, err
	}
	u := &upstream{c: c, t: t, health: newHealth(&c.cfg, func(fails int, backoff time.Duration) {
		c.core().Logger().Warn("dnsmsg: upstream down", "upstream", s, "failures", fails, "backoff", backoff)
	})}
	u.meter = c.core().NewMeter(t.kind.transport(), core.Client, c.cfg.Name, s)
	switch t.kind {
	case upUDP:
		u.tcpMeter = c.core().NewMeter(core.TCP, core.Client, c.cfg.Name, s)
		u.tcp = newPool(c.cfg.MaxConns, u.dialStream(nil))
	case upTCP:
		u.pool = newPool(c.cfg.MaxConns, u.dialStream(nil))
	case upTLS:
		u.pool = newPool(c.cfg.MaxConns, u.dialStream(c.tlsConfig(ALPN)))
	case upHTTPS:
		u.pool = newPool(c.cfg.MaxConns, u.dialHTTPS)
	}
	c.upstreams[s] = u
	u.users.Add(1)
	return u, nil
}

// forget closes and drops the upstreams unused for upstreamIdle that have
// no failure to remember. Called with mu held: a call takes an upstream
// under mu, so one in use or just taken is never dropped.
func (c *Client) forget(now int64) {
	for s, u := range c.upstreams {
		if u.users.Load() == 0 && now-u.last.Load() >= int64(upstreamIdle) && u.health.clean() {
			delete(c.upstreams, s)
			u.close()
		}
	}
}

// tlsConfig returns the configured TLS settings with alpn unless set.
func (c *Client) tlsConfig(alpn string) *tls.Config {
	conf := c.cfg.TLS
	if conf == nil {
		conf = &tls.Config{}
	}
	if len(conf.NextProtos) == 0 {
		conf = conf.Clone()
		conf.NextProtos = []string{alpn}
	}
	return conf
}

func (c *Client) maxInFlight() int {
	if c.cfg.MaxInFlight > 0 {
		return c.cfg.MaxInFlight
	}
	return DefaultHTTPInFlight
}

// upstream is one upstream of a Client: its health and its connections.
type upstream struct {
	c      *Client
	t      target
	health *health
	pool   *pool // TCP, TLS, DoH: the connections; nil for UDP
	tcp    *pool // UDP: the TCP connections for truncated replies
	// meter counts the upstream's queries and connections; tcpMeter, for
	// UDP, its TCP connections.
	meter, tcpMeter *core.Meter
	// users counts the calls using the upstream (taken under the Client's
	// mu); last is when the last one ended (core.Now).
	users atomic.Int32
	last  atomic.Int64
}

// release ends a call's use of u.
func (u *upstream) release() {
	u.last.Store(core.Now())
	u.users.Add(-1)
}

// withStreamMeter returns ctx carrying the meter the upstream's TCP and
// TLS connections count on: tcpMeter for a UDP upstream, else its own.
func (u *upstream) withStreamMeter(ctx context.Context) context.Context {
	if u.tcpMeter != nil {
		return core.WithMeter(ctx, u.tcpMeter)
	}
	return core.WithMeter(ctx, u.meter)
}

func (u *upstream) close() {
	u.meter.Close()
	if u.tcpMeter != nil {
		u.tcpMeter.Close()
	}
	for _, p := range []*pool{u.pool, u.tcp} {
		if p != nil {
			p.close()
		}
	}
}

// exchange sends q the upstream's way. A query whose connection broke
// before its reply (the upstream closed it, say) is sent once more, on
// another connection.
func (u *upstream) exchange(ctx context.Context, q []byte) ([]byte, error) {
	if u.t.kind == upUDP {
		r, err := u.exchangeUDP(ctx, q)
		if err != nil || !truncated(r) {
			return r, err
		}
		return exchangeOn(ctx, u.tcp, q)
	}
	return exchangeOn(ctx, u.pool, q)
}

func exchangeOn(ctx context.Context, p *pool, q []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		r, err := c.exchange(ctx, q)
		if err == nil || attempt > 0 || ctx.Err() != nil || !connLost(err) {
			return r, err
		}
	}
}

// connLost reports an error that ended a connection, not the query.
func connLost(err error) bool {
	return errors.Is(err, nm.ErrEOF) || errors.Is(err, nm.ErrConnReset)
}

// truncated reports whether the wire reply r has the TC bit set.
func truncated(r []byte) bool { return len(r) > 2 && r[2]&0x02 != 0 }

// dialStream returns the dialer of the upstream's TCP (tlsConf nil) or TLS
// connections.
func (u *upstream) dialStream(tlsConf *tls.Config) func(context.Context) (pooled, error) {
	return func(ctx context.Context) (pooled, error) {
		cfg := u.c.cfg.stream()
		cfg.Timeouts.Read = nm.NoTimeout // each query has its own
		ctx = u.withStreamMeter(ctx)
		var h nm.Handle
		var err error
		kind := core.TCP
		if tlsConf != nil {
			kind = core.TLS
			h, err = stream.DialTLS(ctx, u.c.m, u.t.addr, tlsConf, cfg)
		} else {
			h, err = stream.Dial(ctx, u.c.m, u.t.addr, cfg)
		}
		if err != nil {
			return nil, err
		}
		return newPipe(u.c.core(), h, kind, u.c.maxInFlight())
	}
}

func (c *Client) core() *core.Manager { return (*core.Manager)(c.m) }
