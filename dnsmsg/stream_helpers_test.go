package dnsmsg_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/certs"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// quiet bounds negative checks (something must not happen); it cannot make
// a correct implementation fail.
const quiet = 50 * time.Millisecond

// skind is one stream transport of DNS: TCP or TLS (DoT). Every stream
// scenario runs with both.
type skind struct {
	name     string
	stat     nm.Transport
	maxConns int // the quota of every listener: scenarios run again with 1
	// proxy puts a PROXY v2 header at the start of every connection, and
	// makes listeners expect it: before TLS, or inside it with inTLS.
	proxy, inTLS bool
}

var skinds = []skind{{name: "tcp", stat: nm.TCP}, {name: "dot", stat: nm.TLS}}

// proxied are the stream kinds behind a PROXY v2 load balancer: the
// scenarios whose two ends are ours run with them too.
var proxied = []skind{
	{name: "tcp+proxy", stat: nm.TCP, proxy: true},
	{name: "dot+proxy", stat: nm.TLS, proxy: true},
	{name: "dot+proxy-in-tls", stat: nm.TLS, proxy: true, inTLS: true},
}

var serverTLS, clientTLS = dnsTLSConfigs()

func dnsTLSConfigs() (*tls.Config, *tls.Config) {
	cert, err := certs.Localhost()
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}},
		&tls.Config{RootCAs: roots, ServerName: "localhost"}
}

// forStreams runs a scenario over TCP and DoT.
func forStreams(t *testing.T, fn func(t *testing.T, k skind)) {
	for _, k := range skinds {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

// forServers runs a scenario over TCP and DoT, plain and behind a PROXY
// v2 balancer: for scenarios whose client is ours or raw.
func forServers(t *testing.T, fn func(t *testing.T, k skind)) {
	for _, k := range append(skinds[:len(skinds):len(skinds)], proxied...) {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

// forStreamsAndQuota runs a scenario over TCP and DoT, plain and behind a
// PROXY v2 balancer, each without a quota and with a quota of 1
// connection.
func forStreamsAndQuota(t *testing.T, fn func(t *testing.T, k skind)) {
	for _, k := range append(skinds[:len(skinds):len(skinds)], proxied...) {
		for _, q := range []int{0, 1} {
			k.maxConns = q
			t.Run(fmt.Sprintf("%s/quota%d", k.name, q), func(t *testing.T) { fn(t, k) })
		}
	}
}

func (k skind) listen(t testing.TB, m *nm.Manager, cfg dnsmsg.ServerConfig) *dnsmsg.Listener {
	t.Helper()
	if cfg.Stream.MaxConns == 0 {
		cfg.Stream.MaxConns = k.maxConns
	}
	if k.proxy {
		cfg.Proxy = loopbackOnly
		cfg.Stream.ProxyInTLS = k.inTLS
	}
	var l *dnsmsg.Listener
	var err error
	if k.stat == nm.TLS {
		l, err = dnsmsg.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, cfg)
	} else {
		l, err = dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (k skind) dialErr(m *nm.Manager, addr string, cfg dnsmsg.ClientConfig) (*dnsmsg.Conn, error) {
	if k.proxy && cfg.ProxyHeader == nil {
		cfg.ProxyHeader = proxyHeader(nil, proxyproto.Stream)
		cfg.Stream.ProxyInTLS = k.inTLS
	}
	if k.stat == nm.TLS {
		return dnsmsg.DialTLS(context.Background(), m, addr, clientTLS, cfg)
	}
	return dnsmsg.DialTCP(context.Background(), m, addr, cfg)
}

func (k skind) dial(t testing.TB, m *nm.Manager, l *dnsmsg.Listener, cfg dnsmsg.ClientConfig) *dnsmsg.Conn {
	t.Helper()
	c, err := k.dialErr(m, l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw opens a plain connection to l (TLS with ALPN dot for DoT), for tests
// that write bytes the client would not.
func (k skind) raw(t testing.TB, l *dnsmsg.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if k.proxy && !k.inTLS {
		c.Write(proxyHeader(t, proxyproto.Stream))
	}
	if k.stat == nm.TLS {
		conf := clientTLS.Clone()
		conf.NextProtos = []string{"dot"}
		c = tls.Client(c, conf)
	}
	if k.proxy && k.inTLS {
		// Written with the first write: the handshake waits for the
		// server, which a quota may hold back.
		c = &prefixed{Conn: c, prefix: proxyHeader(t, proxyproto.Stream)}
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// miekgNet is the miekg/dns client network of the kind.
func (k skind) miekgNet() string {
	if k.stat == nm.TLS {
		return "tcp-tls"
	}
	return "tcp"
}

// frame prefixes each message with its length.
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// readFrame reads one length-prefixed message from c.
func readFrame(t testing.TB, c net.Conn) []byte {
	t.Helper()
	b, err := readFrameErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readFrameErr reads one length-prefixed message from c, for goroutines
// other than the test's.
func readFrameErr(c net.Conn) ([]byte, error) {
	var p [2]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return nil, fmt.Errorf("reading a length: %w", err)
	}
	b := make([]byte, binary.BigEndian.Uint16(p[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, fmt.Errorf("reading a message: %w", err)
	}
	return b, nil
}

// queryID returns a packed query for name with the given ID.
func queryID(t testing.TB, name string, id uint16) []byte {
	q := query(name)
	q.Id = id
	return pack(t, q)
}

// rawListener listens on loopback with the kind's transport, for servers
// that write bytes ours would not.
func (k skind) rawListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if k.stat == nm.TLS {
		conf := serverTLS.Clone()
		conf.NextProtos = []string{"dot"}
		return tls.NewListener(ln, conf)
	}
	return ln
}

// pipeline sends n queries on c (IDs 0..n-1), then reads n replies, and
// checks that each query got its own.
func pipeline(t testing.TB, c *dnsmsg.Conn, n int) {
	for j := 0; j < n; j++ {
		if err := c.Send(queryID(t, "shard.example", uint16(j))); err != nil {
			t.Error(err)
			return
		}
	}
	seen := make(map[uint16]bool)
	for j := 0; j < n; j++ {
		ev := nmtest.Next(t, c.Read(), nmtest.Timeout)
		if ev.Err != nil {
			t.Errorf("reply %d: %v", j, ev.Err)
			return
		}
		seen[dnsmsg.ID(ev.Data)] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct replies; want %d", len(seen), n)
	}
}

// prefixed writes prefix together with its first write.
type prefixed struct {
	net.Conn
	prefix []byte
}

func (p *prefixed) Write(b []byte) (int, error) {
	if p.prefix != nil {
		b = append(p.prefix, b...)
		n, err := p.Conn.Write(b)
		n -= len(p.prefix)
		p.prefix = nil
		return max(n, 0), err
	}
	return p.Conn.Write(b)
}

// Handshake completes the TLS handshake under p, without the prefix.
func (p *prefixed) Handshake() error { return p.Conn.(*tls.Conn).Handshake() }

// timeoutRecovery sends a query on c (whose read timeout is short) that
// the server, taking it from reqs, leaves unanswered for two reads: each
// times out and the Conn stays usable; then the reply comes on the next.
func timeoutRecovery(t *testing.T, c *dnsmsg.Conn, reqs <-chan nm.Event) {
	t.Helper()
	if err := c.Send(queryID(t, "slow.example", 7)); err != nil {
		t.Fatal(err)
	}
	req := nmtest.Next(t, reqs, nmtest.Timeout)
	for i := 0; i < 2; i++ {
		nmtest.NextErr(t, c.Read(), nm.ErrTimedOut)
	}
	reply := append([]byte(nil), req.Data...)
	dnsmsg.SetResponse(reply)
	if err := req.Handle.Send(reply); err != nil {
		t.Fatal(err)
	}
	req.Handle.Detach()
	c.SetReadTimeout(nmtest.Timeout)
	if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil || dnsmsg.ID(ev.Data) != 7 {
		t.Fatalf("after the timeouts: %v; want the reply to 7", ev.Err)
	}
}
