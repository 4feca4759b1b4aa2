package stream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// sessionCache resumes TLS sessions for DialTLS calls whose tls.Config has
// no ClientSessionCache of its own.
var sessionCache = tls.NewLRUClientSessionCache(0)

// Dial connects to the TCP server at addr and returns the connection's
// handle, whose one reference the caller owns. The connect timeout is
// cfg.Timeouts.Initial (DefaultInitialTimeout if zero), within ctx. Exactly
// one outcome: the handle, or an error matching nm.ErrConnRefused,
// nm.ErrTimedOut, nm.ErrCanceled (ctx canceled) or nm.ErrShuttingDown (the
// manager is closing).
//
// On client handles, cfg.Timeouts.Read bounds each wait for data while
// reading: it delivers nm.ErrTimedOut and stops reading, and Read resumes.
func Dial(ctx context.Context, m *nm.Manager, addr string, cfg Config) (nm.Handle, error) {
	h, err := dial(ctx, (*core.Manager)(m), addr, nil, cfg)
	return nm.Handle(h), err
}

// DialTLS is Dial with TLS; the handshake completes within the connect
// timeout. If tlsConf has no ServerName, the host of addr is used; if it has
// no ClientSessionCache, a cache shared by DialTLS calls resumes sessions.
func DialTLS(ctx context.Context, m *nm.Manager, addr string, tlsConf *tls.Config, cfg Config) (nm.Handle, error) {
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	h, err := dial(ctx, (*core.Manager)(m), addr, tlsConf, cfg)
	return nm.Handle(h), err
}

func dial(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, cfg Config) (core.Handle, error) {
	kind := core.TCP
	if tlsConf != nil {
		kind = core.TLS
	}
	shard := m.NextShard()
	meter := core.MeterFrom(ctx)
	stats := core.CountersOf(meter, shard, kind)
	tc, tlsConn, err := dialConn(ctx, m, addr, tlsConf, &cfg, stats)
	if err != nil {
		return core.Handle{}, err
	}
	c, err := newConn(m, shard, meter, stats, tc, tlsConn, &cfg, false)
	if err != nil {
		tc.Close()
		return core.Handle{}, err
	}
	c.ready()
	stats.Opened.Add(1)
	stats.Active.Add(1)
	if err := m.Go(c.run); err != nil {
		c.end()
		return core.Handle{}, err
	}
	return c.h, nil
}

// dialConn connects and, when tlsConf is not nil, completes the TLS
// handshake, within the connect timeout and ctx.
func dialConn(ctx context.Context, m *core.Manager, addr string, tlsConf *tls.Config, cfg *Config, stats *core.Counters) (*net.TCPConn, *tls.Conn, error) {
	if m.Closing() {
		return nil, nil, nm.ErrShuttingDown
	}
	t := cfg.timeouts()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.Context(), cancel)
	defer stop()
	if t.Initial > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, t.Initial)
		defer c2()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		stats.BindFailed.Add(1)
		return nil, nil, dialError(ctx, m, err)
	}
	tc := nc.(*net.TCPConn)
	if h := cfg.ProxyHeader; len(h) > 0 && (tlsConf == nil || !cfg.ProxyInTLS) {
		if err := writeBefore(ctx, tc, h); err != nil {
			tc.Close()
			return nil, nil, dialError(ctx, m, err)
		}
	}
	if tlsConf == nil {
		return tc, nil, nil
	}
	conf := tlsConf.Clone()
	if conf.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			conf.ServerName = host
		}
	}
	if conf.ClientSessionCache == nil {
		conf.ClientSessionCache = sessionCache
	}
	w, err := newWire(tc)
	if err != nil {
		tc.Close()
		return nil, nil, err
	}
	tlsConn := tls.Client(w, conf)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		tc.Close()
		stats.RecvFailed.Add(1)
		return nil, nil, dialError(ctx, m, err)
	}
	if h := cfg.ProxyHeader; len(h) > 0 && cfg.ProxyInTLS {
		if err := writeBefore(ctx, tlsConn, h); err != nil {
			tc.Close()
			return nil, nil, dialError(ctx, m, err)
		}
	}
	return tc, tlsConn, nil
}

// writeBefore writes b to c within ctx's deadline.
func writeBefore(ctx context.Context, c net.Conn, b []byte) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
		defer c.SetWriteDeadline(time.Time{})
	}
	_, err := c.Write(b)
	return err
}

// dialError names why a dial failed.
func dialError(ctx context.Context, m *core.Manager, err error) error {
	switch {
	case m.Closing():
		return nm.ErrShuttingDown
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nm.ErrTimedOut
	case ctx.Err() != nil:
		return nm.ErrCanceled
	}
	if _, ok := err.(*net.OpError); ok {
		return core.MapError(err)
	}
	return err
}
