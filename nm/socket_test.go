package nm_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestUDPListenRefusesPortInUse checks that a second UDP listener on a port
// another listener of the process holds fails with EADDRINUSE, counted,
// and that SharePort on both makes them share it.
func TestUDPListenRefusesPortInUse(t *testing.T) {
	m := newManager(t, 3)
	ctx := context.Background()
	l := listen(t, m, nm.UDPConfig{})
	if l2, err := nm.ListenUDP(ctx, m, l.Addr().String(), nm.UDPConfig{}); err == nil {
		l2.Close()
		t.Errorf("second listener on %v bound; want EADDRINUSE", l.Addr())
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second listener: %v; want EADDRINUSE", err)
	}
	if n := m.Stats().Of(nm.UDP).BindFailed; n != 1 {
		t.Errorf("BindFailed = %d; want 1", n)
	}
	l.Close()
	nmtest.ExpectFinal(t, l.Datagrams(), 0, nm.ErrCanceled)
	if !transport.ReusePortSupported {
		return
	}
	share := nm.UDPConfig{Socket: nm.SocketConfig{SharePort: true}}
	a, err := nm.ListenUDP(ctx, m, "127.0.0.1:0", share)
	if err != nil {
		t.Fatal(err)
	}
	b, err := nm.ListenUDP(ctx, m, a.Addr().String(), share)
	if err != nil {
		t.Fatalf("second listener with SharePort: %v", err)
	}
	a.Close()
	b.Close()
	nmtest.ExpectFinal(t, a.Datagrams(), 0, nm.ErrCanceled)
	nmtest.ExpectFinal(t, b.Datagrams(), 0, nm.ErrCanceled)
}

// TestUDPListenFamily checks that 0.0.0.0 binds IPv4 only, and that Family
// "ip4" makes an empty host IPv4 only.
func TestUDPListenFamily(t *testing.T) {
	m := newManager(t, 1)
	for _, tc := range []struct {
		addr   string
		family string
	}{{"0.0.0.0:0", ""}, {":0", "ip4"}} {
		l, err := nm.ListenUDP(context.Background(), m, tc.addr, nm.UDPConfig{Socket: nm.SocketConfig{Family: tc.family}})
		if err != nil {
			t.Fatal(err)
		}
		if a := l.Addr().Addr(); !a.Is4() {
			t.Errorf("%q with family %q bound %v; want IPv4 only", tc.addr, tc.family, l.Addr())
		}
		l.Close()
		nmtest.ExpectFinal(t, l.Datagrams(), 0, nm.ErrCanceled)
	}
}

// TestUDPListenGivenSocket checks that a listener serves a socket the
// caller opened, shared by its three shards, and closes it with itself.
func TestUDPListenGivenSocket(t *testing.T) {
	m := newManager(t, 3)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, err := nm.ListenUDP(context.Background(), m, "", nm.UDPConfig{Socket: nm.SocketConfig{PacketConns: []net.PacketConn{pc}}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr() != transport.AddrPort(pc.LocalAddr()) {
		t.Errorf("Addr = %v; want the socket's %v", l.Addr(), pc.LocalAddr())
	}
	wait := serve(t, l, echo)
	for i := 0; i < 4; i++ {
		h := dial(t, m, l)
		exchangeN(t, h, 3)
		h.Detach()
	}
	l.Close()
	if r := wait(); len(r.Data) != 12 {
		t.Errorf("served %d datagrams; want 12", len(r.Data))
	}
	if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("given socket after Close: %v; want net.ErrClosed", err)
	}
}
