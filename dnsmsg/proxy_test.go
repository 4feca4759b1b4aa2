package dnsmsg_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/proxyproto"
)

var (
	proxiedClient = netip.MustParseAddrPort("192.0.2.7:40000")
	proxiedServer = netip.MustParseAddrPort("198.51.100.1:53")
	loopbackOnly  = &proxyproto.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	elsewhereOnly = &proxyproto.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
)

func proxyHeader(t testing.TB, tr proxyproto.Transport) []byte {
	b, err := proxyproto.Header{Command: proxyproto.Proxy, Transport: tr, Source: proxiedClient, Destination: proxiedServer}.Append(nil)
	if err != nil {
		panic(err) // the addresses above are valid
	}
	return b
}

// checkProxied checks the addresses of a request that came through a
// proxy at real.
func checkProxied(t testing.TB, ev nm.Event, real netip.AddrPort) {
	t.Helper()
	h := ev.Handle
	if h.PeerAddr() != proxiedClient || h.LocalAddr() != proxiedServer {
		t.Errorf("PeerAddr %v, LocalAddr %v; want the header's %v, %v", h.PeerAddr(), h.LocalAddr(), proxiedClient, proxiedServer)
	}
	if h.RealPeerAddr() != real {
		t.Errorf("RealPeerAddr %v; want the proxy's %v", h.RealPeerAddr(), real)
	}
}

// answer replies to one request and detaches it.
func answer(t testing.TB, ev nm.Event) {
	t.Helper()
	if err := ev.Handle.Send(asReply(ev.Data)[0]); err != nil {
		t.Errorf("reply: %v", err)
	}
	ev.Handle.Detach()
}

// proxiedUDP returns a UDP listener expecting PROXY headers under policy,
// and a client sending them.
func proxiedUDP(t *testing.T, m *nm.Manager, policy *proxyproto.Policy) (*dnsmsg.Listener, *dnsmsg.Conn) {
	t.Helper()
	l, err := dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{Proxy: policy})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{ProxyHeader: proxyHeader(t, proxyproto.Datagram)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

func TestProxyUDP(t *testing.T) {
	m := newManager(t, 2)
	l, c := proxiedUDP(t, m, loopbackOnly)
	c.Send(queryID(t, "proxied.example", 1))
	ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
	checkProxied(t, ev, c.Handle().LocalAddr())
	if dnsmsg.ID(ev.Data) != 1 {
		t.Errorf("request %x; want the query without the header", ev.Data)
	}
	answer(t, ev) // to the proxy: the real peer
	if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil || dnsmsg.ID(ev.Data) != 1 {
		t.Fatalf("reply: %v", ev.Err)
	}

	// LOCAL keeps the real addresses.
	local, _ := proxyproto.LocalHeader.Append(nil)
	lc, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{ProxyHeader: local})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lc.Send(queryID(t, "local.example", 2))
	ev = nmtest.Next(t, l.Requests(), nmtest.Timeout)
	if ev.Handle.PeerAddr() != lc.Handle().LocalAddr() || ev.Handle.PeerAddr() != ev.Handle.RealPeerAddr() {
		t.Errorf("LOCAL: PeerAddr %v; want the socket's %v", ev.Handle.PeerAddr(), lc.Handle().LocalAddr())
	}
	answer(t, ev)

	// Without a header, or with a bad one: dropped and counted.
	before := m.Stats().Of(nm.UDP).Dropped
	plain, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	bad := proxyHeader(t, proxyproto.Datagram)
	bad[12] = 0x11 // version 1
	plain.Write(queryID(t, "plain.example", 3))
	plain.Write(append(bad, queryID(t, "bad.example", 4)...))
	plain.Write(proxyHeader(t, proxyproto.Datagram)[:20])
	waitDropped(t, m, nm.UDP, before+3)
	l.Close()
	nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled) // none of them delivered
}

// waitDropped waits until the transport's dropped count reaches n; the
// deadline only bounds a failure.
func waitDropped(t testing.TB, m *nm.Manager, tr nm.Transport, n int64) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for m.Stats().Of(tr).Dropped < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v dropped %d; want %d", tr, m.Stats().Of(tr).Dropped, n)
		}
		time.Sleep(time.Millisecond) // polling a counter
	}
}

func TestProxyUDPFromPeerNotAllowed(t *testing.T) {
	m := newManager(t, 1)
	l, c := proxiedUDP(t, m, elsewhereOnly)
	c.Send(queryID(t, "refused.example", 1))
	waitDropped(t, m, nm.UDP, 1)
	l.Close()
	nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
}

// pkind is a stream transport behind a PROXY v2 balancer, with the
// listener's policy and the client's header chosen by the test.
type pkind struct{ skind }

func forProxy(t *testing.T, fn func(t *testing.T, p pkind)) {
	for _, k := range proxied {
		t.Run(k.name, func(t *testing.T) { fn(t, pkind{k}) })
	}
}

func (p pkind) listen(t testing.TB, m *nm.Manager, policy *proxyproto.Policy, cfg dnsmsg.ServerConfig) *dnsmsg.Listener {
	k := p.skind
	k.proxy = false // the policy is the test's
	cfg.Proxy = policy
	cfg.Stream.ProxyInTLS = p.inTLS
	return k.listen(t, m, cfg)
}

// dialErr dials with header (none if nil) in place of the usual one.
func (p pkind) dialErr(t testing.TB, m *nm.Manager, l *dnsmsg.Listener, header []byte) (*dnsmsg.Conn, error) {
	k := p.skind
	k.proxy = false
	cfg := dnsmsg.ClientConfig{ProxyHeader: header}
	cfg.Stream.ProxyInTLS = p.inTLS
	return k.dialErr(m, l.Addr().String(), cfg)
}

func TestProxyStreamAddresses(t *testing.T) {
	forProxy(t, func(t *testing.T, p pkind) {
		m := newManager(t, 2)
		l := p.listen(t, m, loopbackOnly, dnsmsg.ServerConfig{})
		for i := 0; i < 2; i++ { // two clients, two queries each
			c, err := p.dialErr(t, m, l, proxyHeader(t, proxyproto.Stream))
			if err != nil {
				t.Fatal(err)
			}
			for j := uint16(0); j < 2; j++ {
				c.Send(queryID(t, "proxied.example", j))
				ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
				checkProxied(t, ev, c.Handle().LocalAddr())
				answer(t, ev)
				if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil || dnsmsg.ID(ev.Data) != j {
					t.Fatalf("reply %d: %v", j, ev.Err)
				}
			}
			c.Close()
		}
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
	})
}

// TestProxyStreamRefusals: a connection without a header, with a bad one,
// from a peer not allowed, one whose header the accept filter refuses, and
// one that sends nothing: none delivers a request, each is counted.
func TestProxyStreamRefusals(t *testing.T) {
	forProxy(t, func(t *testing.T, p pkind) {
		m := newManager(t, 1)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.Timeouts.Initial = 200 * time.Millisecond
		cfg.Stream.Accept = func(peer, local netip.AddrPort) error {
			if peer.Addr() == netip.MustParseAddr("192.0.2.66") {
				return errors.New("blocked")
			}
			return nil
		}
		l := p.listen(t, m, loopbackOnly, cfg)
		bad := proxyHeader(t, proxyproto.Stream)
		bad[0] = 'X'
		blocked, _ := proxyproto.Header{Command: proxyproto.Proxy, Source: netip.MustParseAddrPort("192.0.2.66:1"), Destination: proxiedServer}.Append(nil)
		for _, tc := range []struct {
			name   string
			header []byte
		}{
			{"no header", nil},
			{"bad signature", bad},
			{"filtered", blocked},
		} {
			c, err := p.dialErr(t, m, l, tc.header)
			if err != nil {
				continue // refused during the handshake: fine
			}
			c.Send(queryID(t, "refused.example", 1))
			if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err == nil {
				t.Errorf("%s: got a reply", tc.name)
			}
			c.Close()
		}
		// A silent connection is closed at the initial timeout.
		silent, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		silent.SetReadDeadline(time.Now().Add(nmtest.Timeout))
		if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("a silent connection: %v; want it closed by the server", err)
		}
		silent.Close()
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
		if st := m.Stats().Of(p.stat); st.Dropped+st.RecvFailed < 4 {
			t.Errorf("stats %+v; want the 4 refusals counted", st)
		}
	})
}

func TestProxyStreamFromPeerNotAllowed(t *testing.T) {
	forProxy(t, func(t *testing.T, p pkind) {
		m := newManager(t, 1)
		l := p.listen(t, m, elsewhereOnly, dnsmsg.ServerConfig{})
		if c, err := p.dialErr(t, m, l, proxyHeader(t, proxyproto.Stream)); err == nil {
			c.Send(queryID(t, "refused.example", 1))
			if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err == nil {
				t.Error("a proxy not allowed got a reply")
			}
			c.Close()
		}
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
		if st := m.Stats().Of(p.stat); st.Dropped != 1 {
			t.Errorf("dropped %d; want 1", st.Dropped)
		}
	})
}

func TestProxyDoH(t *testing.T) {
	for _, inTLS := range []bool{false, true} {
		m := newManager(t, 1)
		var cfg dnsmsg.HTTPConfig
		cfg.Stream.Proxy = loopbackOnly
		cfg.Stream.ProxyInTLS = inTLS
		l := hkinds[0].listen(t, m, cfg)
		ccfg := dnsmsg.ClientConfig{ProxyHeader: proxyHeader(t, proxyproto.Stream)}
		ccfg.Stream.ProxyInTLS = inTLS
		c := hkinds[1].dial(t, m, l, ccfg)
		c.Send(queryID(t, "doh.example", 5))
		ev := nmtest.Next(t, requests(l), nmtest.Timeout)
		checkProxied(t, ev, c.Handle().LocalAddr())
		answer(t, ev)
		if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil {
			t.Fatalf("inside TLS %v: reply: %v", inTLS, ev.Err)
		}
		c.Close()
		l.Close()
	}
}
