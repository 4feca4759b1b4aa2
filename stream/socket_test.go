package stream_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// TestListenRefusesPortInUse checks that a second listener on a port
// another listener of the process holds fails with EADDRINUSE, counted,
// and that SharePort on both makes them share it.
func TestListenRefusesPortInUse(t *testing.T) {
	m := newManager(t, 3)
	ctx := context.Background()
	l, err := stream.Listen(ctx, m, "127.0.0.1:0", stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if l2, err := stream.Listen(ctx, m, l.Addr().String(), stream.Config{}); err == nil {
		l2.Close()
		t.Errorf("second listener on %v bound; want EADDRINUSE", l.Addr())
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second listener: %v; want EADDRINUSE", err)
	}
	if n := m.Stats().Of(nm.TCP).BindFailed; n != 1 {
		t.Errorf("BindFailed = %d; want 1", n)
	}
	l.Close()
	nmtest.ExpectFinal(t, l.Conns(), 0, nm.ErrCanceled)
	if !transport.ReusePortSupported {
		return
	}
	share := stream.Config{Socket: nm.SocketConfig{SharePort: true}}
	a, err := stream.Listen(ctx, m, "127.0.0.1:0", share)
	if err != nil {
		t.Fatal(err)
	}
	b, err := stream.Listen(ctx, m, a.Addr().String(), share)
	if err != nil {
		t.Fatalf("second listener with SharePort: %v", err)
	}
	a.Close()
	b.Close()
	nmtest.ExpectFinal(t, a.Conns(), 0, nm.ErrCanceled)
	nmtest.ExpectFinal(t, b.Conns(), 0, nm.ErrCanceled)
}

// TestListenGivenListener checks that a listener serves a socket the
// caller opened, with one accept loop per shard on it.
func TestListenGivenListener(t *testing.T) {
	m := newManager(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, err := stream.Listen(context.Background(), m, "", stream.Config{Socket: nm.SocketConfig{Listeners: []net.Listener{ln}}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr() != transport.AddrPort(ln.Addr()) {
		t.Errorf("Addr = %v; want the socket's %v", l.Addr(), ln.Addr())
	}
	wait := echoServer(l)
	k := kinds[0]
	for i := 0; i < 3; i++ {
		h := k.mustDial(t, m, l, stream.Config{})
		if err := h.Send([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, h, 4); string(got) != "ping" {
			t.Errorf("echo %q; want ping", got)
		}
		h.Detach()
	}
	l.Close()
	wait()
}
