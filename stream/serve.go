package stream

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/transport"
)

// A Server takes whole connections from a listener whose Config.Serve is
// set: protocols that need a net.Conn of their own, such as HTTP/2 for DNS
// over HTTPS.
//
// ServeConn is called on the connection's own goroutine, which the manager
// waits for, after the accept filter, the quota and the TLS handshake (done
// within the initial timeout). It owns nc until it returns; the listener
// then closes nc and releases the quota slot. nc is closed under ServeConn
// when the listener or the manager closes, so ServeConn must return soon
// after its reads and writes fail.
type Server interface {
	ServeConn(nc net.Conn, shard *nm.Shard)
}

// serve runs a connection for the listener's Server, on its own goroutine.
func (l *Listener) serve(shard *nm.Shard, tc *net.TCPConn) {
	stats := shard.Counters(l.kind)
	defer func() {
		tc.Close()
		l.forget(tc)
		l.release()
		stats.Closed.Add(1)
		stats.Active.Add(-1)
		l.unref()
	}()
	if err := transport.SetStreamOptions(tc, l.cfg.Delay, l.cfg.KeepAlive); err != nil {
		stats.RecvFailed.Add(1)
		return
	}
	var nc net.Conn = tc
	if conf := l.tls.Load(); conf != nil {
		tlsConn := tls.Server(tc, conf)
		if err := handshake(l.m.Context(), tc, tlsConn, l.cfg.timeouts().Initial); err != nil {
			stats.RecvFailed.Add(1)
			l.m.Logger().Debug("stream: TLS handshake failed", "peer", tc.RemoteAddr(), "err", err)
			return
		}
		nc = tlsConn
	}
	l.cfg.Serve.ServeConn(nc, shard)
}

// handshake completes a server's TLS handshake within timeout (none if
// zero). It runs deep in crypto code: on a goroutine of its own, so that its
// stack growth does not stay with the connection's long-lived goroutine.
// ctx (the manager's) interrupts it.
func handshake(ctx context.Context, tc *net.TCPConn, tlsConn *tls.Conn, timeout time.Duration) error {
	if timeout > 0 {
		tc.SetDeadline(time.Now().Add(timeout))
		defer tc.SetDeadline(time.Time{})
	}
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

// closeServed closes every connection handed to a Server.
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
// net.Conn of their own, such as HTTP/2; it is counted on shard. Only
// cfg's connect timeout (Timeouts.Initial), Delay and KeepAlive apply.
func DialConn(ctx context.Context, shard *nm.Shard, addr string, tlsConf *tls.Config, cfg Config) (net.Conn, error) {
	kind := nm.TCP
	if tlsConf != nil {
		kind = nm.TLS
	}
	stats := shard.Counters(kind)
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
