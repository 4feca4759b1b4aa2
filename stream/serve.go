package stream

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"
	"github.com/rainbowduck/netmgr/nm"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// serve runs a connection for the listener's Server, on its own goroutine.
func (l *Listener) serve(shard *core.Shard, tc *net.TCPConn, key netip.Prefix) {
	stats := l.meter.On(shard)
	born := time.Now()
	defer func() {
		tc.Close()
		l.forget(tc)
		l.leave(key)
		stats.Closed.Add(1)
		stats.Active.Add(-1)
		l.unref()
	}()
	if err := transport.SetStreamOptions(tc, l.cfg.Delay, l.cfg.KeepAlive); err != nil {
		stats.RecvFailed.Add(1)
		return
	}
	w, err := newWire(tc) // raw system calls, under TLS or not
	if err != nil {
		stats.RecvFailed.Add(1)
		return
	}
	var tlsConn *tls.Conn
	if conf := l.tls.Load(); conf != nil {
		tlsConn = tls.Server(w, conf)
	}
	hdr, err := l.admit(tc, tlsConn, born, stats)
	if err != nil {
		return
	}
	c := &streamhook.ServedConn{Conn: w, Shard: shard, RealLocal: transport.AddrPort(tc.LocalAddr()), RealPeer: transport.AddrPort(tc.RemoteAddr()), Proxy: hdr}
	if tlsConn != nil {
		c.Conn = tlsConn
	}
	c.Local, c.Peer = c.RealLocal, c.RealPeer
	if hdr != nil {
		if src, dst, ok := hdr.Addresses(); ok {
			c.Local, c.Peer = dst, src
		}
	}
	l.hooks.Serve.ServeConn(c)
}

// vet checks a connection just accepted: the PROXY allow-list, and the
// accept filter unless it waits for the PROXY header's addresses.
func (l *Listener) vet(tc *net.TCPConn) bool {
	peer, local := transport.AddrPort(tc.RemoteAddr()), transport.AddrPort(tc.LocalAddr())
	if p := l.cfg.Proxy; p != nil {
		if !p.Allowed(peer.Addr()) {
			l.m.Logger().Debug("stream: PROXY peer not allowed", "peer", peer)
			return false
		}
		return true
	}
	return l.cfg.Accept == nil || l.cfg.Accept(peer, local) == nil
}

// admit readies a server connection on its own goroutine, within the
// initial timeout from born: the PROXY header before TLS, the TLS
// handshake, the PROXY header inside TLS, and then the accept filter with
// the header's addresses. It returns the header, if any. A failure is
// counted and logged.
func (l *Listener) admit(tc *net.TCPConn, tlsConn *tls.Conn, born time.Time, stats *core.Counters) (*proxyproto.Header, error) {
	var deadline time.Time
	if initial := l.cfg.timeouts().Initial; initial > 0 {
		deadline = born.Add(initial)
	}
	fail := func(msg string, err error) (*proxyproto.Header, error) {
		stats.Dropped.Add(1)
		l.m.Logger().Debug(msg, "peer", tc.RemoteAddr(), "err", err) // msg: a constant
		return nil, err
	}
	p := l.cfg.Proxy
	var hdr *proxyproto.Header
	var err error
	if p != nil && (tlsConn == nil || !l.cfg.ProxyInTLS) {
		if hdr, err = readProxy(tc, p, deadline); err != nil {
			return fail("stream: bad PROXY header", err)
		}
	}
	if tlsConn != nil {
		if err := handshake(l.m.Context(), tc, tlsConn, deadline); err != nil {
			stats.RecvFailed.Add(1)
			if !l.m.Closing() {
				l.m.Logger().Info("stream: TLS handshake failed", "addr", l.addr, "peer", tc.RemoteAddr(), "err", err)
			}
			return nil, err
		}
		if p != nil && l.cfg.ProxyInTLS {
			if hdr, err = readProxy(tlsConn, p, deadline); err != nil {
				return fail("stream: bad PROXY header", err)
			}
		}
	}
	if p != nil && l.cfg.Accept != nil {
		peer, local := transport.AddrPort(tc.RemoteAddr()), transport.AddrPort(tc.LocalAddr())
		if src, dst, ok := hdr.Addresses(); ok {
			peer, local = src, dst
		}
		if err := l.cfg.Accept(peer, local); err != nil {
			return fail("stream: connection refused by the accept filter", err)
		}
	}
	return hdr, nil
}

// readProxy reads a PROXY header from r before deadline.
func readProxy(r interface {
	io.Reader
	SetReadDeadline(time.Time) error
}, p *proxyproto.Policy, deadline time.Time) (*proxyproto.Header, error) {
	r.SetReadDeadline(deadline)
	defer r.SetReadDeadline(time.Time{})
	h, err := proxyproto.ReadHeader(r, p.MaxLen)
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// handshake completes a server's TLS handshake before deadline (none if
// zero). It runs deep in crypto code: on a goroutine of its own, so that its
// stack growth does not stay with the connection's long-lived goroutine.
// ctx (the manager's) interrupts it.
func handshake(ctx context.Context, tc *net.TCPConn, tlsConn *tls.Conn, deadline time.Time) error {
	tc.SetDeadline(deadline)
	defer tc.SetDeadline(time.Time{})
	res := make(chan error, 1)
	go func() { res <- tlsConn.HandshakeContext(ctx) }()
	return <-res
}

// track records a connection handed to a Server, so that Close can close
// it. It returns false if the listener is already closed.
func (l *Listener) track(tc *net.TCPConn) bool {
	l.smu.Lock()
	defer l.smu.Unlock()
	if l.sclosed {
		return false
	}
	if l.served == nil {
		l.served = make(map[*net.TCPConn]struct{})
	}
	l.served[tc] = struct{}{}
	return true
}

func (l *Listener) forget(tc *net.TCPConn) {
	l.smu.Lock()
	delete(l.served, tc)
	l.smu.Unlock()
}

// closeServed closes every connection handed to a Server, and those a
// consumer is to take that have not sent their first byte.
func (l *Listener) closeServed() {
	l.smu.Lock()
	l.sclosed = true
	served := l.served
	l.served = nil
	l.smu.Unlock()
	for tc := range served {
		tc.Close()
	}
}

// DialConn connects to addr as Dial does (with TLS when tlsConf is not
// nil, as DialTLS does: server name, shared session cache) and returns the
// connection itself rather than a handle, for protocols that need a
// net.Conn of their own, such as HTTP/2; it is counted in m's statistics.
// Only cfg's connect timeout (Timeouts.Initial), Delay and KeepAlive
// apply.
func DialConn(ctx context.Context, m *nm.Manager, addr string, tlsConf *tls.Config, cfg Config) (net.Conn, error) {
	shard := streamhook.ShardFrom(ctx)
	if shard == nil {
		shard = (*core.Manager)(m).NextShard()
	}
	kind := core.TCP
	if tlsConf != nil {
		kind = core.TLS
	}
	stats := core.CountersOf(core.MeterFrom(ctx), shard, kind)
	tc, tlsConn, err := dialConn(ctx, shard.Manager(), addr, tlsConf, &cfg, stats)
	if err != nil {
		return nil, err
	}
	if err := transport.SetStreamOptions(tc, cfg.Delay, cfg.KeepAlive); err != nil {
		tc.Close()
		return nil, err
	}
	stats.Opened.Add(1)
	if tlsConn != nil {
		return tlsConn, nil
	}
	return tc, nil
}
