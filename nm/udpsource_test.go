//go:build linux

package nm_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// whereAsked answers each request with its handle's LocalAddr and
// InterfaceIndex, as text.
func whereAsked(t *testing.T, l *nm.UDPListener) (wait func() nmtest.Result) {
	done := make(chan nmtest.Result, 1)
	go func() {
		var r nmtest.Result
		for ev := range l.Datagrams() {
			if ev.Err != nil {
				r.Final = ev.Err
				continue
			}
			h := ev.Handle
			if err := h.Send(fmt.Appendf(nil, "%v %d", h.LocalAddr(), h.InterfaceIndex())); err != nil {
				t.Errorf("Send: %v", err)
			}
			h.Detach()
		}
		done <- r
	}()
	return func() nmtest.Result {
		select {
		case r := <-done:
			return r
		case <-time.After(nmtest.Timeout):
			t.Fatal("listener not closed")
			return nmtest.Result{}
		}
	}
}

func loopbackIndex(t *testing.T) int {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Index
		}
	}
	t.Fatal("no loopback interface")
	return 0
}

// TestUDPWildcardAnswersFromAddressAsked checks that a listener on a
// wildcard address answers each client from the address it sent to, and
// that the request's LocalAddr is that address.
func TestUDPWildcardAnswersFromAddressAsked(t *testing.T) {
	lo := loopbackIndex(t)
	for _, tc := range []struct {
		addr string
		dsts []string
	}{
		{"0.0.0.0:0", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}},
		{"[::]:0", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"}},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			m := newManager(t, 2)
			l, err := nm.ListenUDP(context.Background(), m, tc.addr, nm.UDPConfig{})
			if err != nil {
				nmtest.SkipOutsideCI(t, "cannot bind %s: %v", tc.addr, err)
			}
			wait := whereAsked(t, l)
			for _, d := range tc.dsts {
				dst := netip.AddrPortFrom(netip.MustParseAddr(d), l.Addr().Port())
				from, reply := askRaw(t, dst)
				if want := fmt.Sprintf("%v %d", dst, lo); reply != want {
					t.Errorf("query to %v: handle reported %q; want %q", dst, reply, want)
				}
				if from != dst {
					t.Errorf("query to %v answered from %v", dst, from)
				}
				askClient(t, m, dst)
			}
			l.Close()
			wait()
		})
	}
}

// askRaw sends one datagram to dst from an unconnected socket and returns
// where the reply came from and what it said.
func askRaw(t *testing.T, dst netip.AddrPort) (netip.AddrPort, string) {
	t.Helper()
	src := netip.MustParseAddr("127.0.0.1")
	if dst.Addr().Is6() {
		src = netip.IPv6Loopback()
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		nmtest.SkipOutsideCI(t, "cannot bind %v: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(nmtest.Timeout))
	if _, err := c.WriteToUDPAddrPort([]byte("q"), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no reply to a query for %v: %v", dst, err)
	}
	return netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), string(buf[:n])
}

// askClient exchanges one datagram with dst through the library's client,
// whose connected socket takes replies from dst only.
func askClient(t *testing.T, m *nm.Manager, dst netip.AddrPort) {
	t.Helper()
	h, err := nm.DialUDP(context.Background(), m, dst.String(), nm.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Detach()
	h.SetReadTimeout(nmtest.Timeout)
	if err := h.Send([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if ev := nmtest.Next(t, h.Read(), nmtest.Timeout); ev.Err != nil {
		t.Errorf("client to %v: %v", dst, ev.Err)
	}
}
