package dnsmsg

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// errNoH2 refuses a DoH server that did not negotiate HTTP/2.
var errNoH2 = errors.New("dnsmsg: the server did not negotiate HTTP/2 (ALPN h2)")

// dohConn is a pooled DoH connection of a Client: each query is an HTTP/2
// stream of its own, sent with ID 0 and matched to its reply by the
// stream, so queries of any number of callers share the connection.
type dohConn struct {
	cc    *http2.ClientConn
	url   *url.URL
	get   bool
	stats *core.Counters
	// slots holds a token per query in flight, the in-flight bound (the
	// server's SETTINGS bound it too); a caller waits for room within its
	// context.
	slots    chan struct{}
	inFlight atomic.Int32
	untrack  func()
	once     sync.Once
}

// dialHTTPS dials a DoH connection to the upstream.
func (u *upstream) dialHTTPS(ctx context.Context) (pooled, error) {
	var tlsConf *tls.Config
	if u.t.url.Scheme == "https" {
		tlsConf = u.c.tlsConfig(http2.NextProtoTLS)
	}
	shard := u.c.core().NextShard()
	nc, err := stream.DialConn(streamhook.WithShard(core.WithMeter(ctx, u.meter), shard), u.c.m, u.t.addr, tlsConf, u.c.cfg.stream())
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol != http2.NextProtoTLS {
		nc.Close()
		return nil, errNoH2
	}
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(nc)
	if err != nil {
		nc.Close()
		return nil, connError(err)
	}
	d := &dohConn{
		cc:    cc,
		url:   u.t.url,
		get:   u.c.cfg.HTTPGet,
		stats: u.meter.On(shard),
		slots: make(chan struct{}, u.c.maxInFlight()),
	}
	if d.untrack, err = u.c.core().Track(d.close); err != nil {
		cc.Close()
		d.stats.Closed.Add(1)
		return nil, err
	}
	d.stats.Active.Add(1)
	return d, nil
}

func (d *dohConn) load() int    { return int(d.inFlight.Load()) }
func (d *dohConn) broken() bool { return !d.cc.CanTakeNewRequest() }
func (d *dohConn) close()       { d.once.Do(d.shut) }
func (d *dohConn) shut() {
	d.cc.Close()
	d.untrack()
	d.stats.Closed.Add(1)
	d.stats.Active.Add(-1)
}

// exchange implements pooled.
func (d *dohConn) exchange(ctx context.Context, q []byte) ([]byte, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxError(ctx)
	}
	d.inFlight.Add(1)
	defer func() {
		if d.inFlight.Add(-1) == 0 && d.broken() {
			d.close() // the last query on a connection the pool dropped
		}
		<-d.slots
	}()
	wire := bytes.Clone(q)
	binary.BigEndian.PutUint16(wire, 0)
	r, err := d.roundTrip(ctx, wire)
	if err != nil {
		if re, ok := err.(*RequestError); ok {
			re.ID = ID(q)
		}
		return nil, err
	}
	binary.BigEndian.PutUint16(r, ID(q))
	return r, nil
}

// roundTrip sends the query wire and returns the reply's message, a
// *RequestError, or the error that ended the connection (mapped).
func (d *dohConn) roundTrip(ctx context.Context, wire []byte) ([]byte, error) {
	t := httpTransport{u: d.url, get: d.get, ctx: ctx}
	req, err := t.request(wire)
	if err != nil {
		return nil, &RequestError{Err: err}
	}
	resp, err := d.cc.RoundTrip(req)
	if err != nil {
		d.stats.SendFailed.Add(1)
		var se http2.StreamError
		switch {
		case ctx.Err() != nil:
			return nil, ctxError(ctx)
		case errors.As(err, &se):
			return nil, &RequestError{Err: err}
		}
		return nil, connError(err)
	}
	defer resp.Body.Close()
	d.stats.Sent.Add(1)
	msg, rerr := readReply(resp)
	switch {
	case rerr != nil && ctx.Err() != nil:
		return nil, ctxError(ctx)
	case rerr != nil:
		d.stats.Dropped.Add(1)
		return nil, rerr
	case !IsResponse(msg) || !answers(msg, wire):
		d.stats.Dropped.Add(1)
		return nil, &RequestError{Status: resp.StatusCode, Err: nm.ErrBadMessage}
	}
	d.stats.Received.Add(1)
	return msg, nil
}
