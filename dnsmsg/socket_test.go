package dnsmsg_test

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/transport"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestServerConfigSocket checks that ServerConfig.Socket reaches UDP and
// TCP listeners: a port held by another listener is refused, and shared
// when both ask for it.
func TestServerConfigSocket(t *testing.T) {
	if !transport.ReusePortSupported {
		t.Skip("SharePort is tested where ports are shared by shards")
	}
	m := newManager(t, 2)
	ctx := context.Background()
	listen := map[string]func(addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error){
		"udp": func(addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenUDP(ctx, m, addr, cfg)
		},
		"tcp": func(addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenTCP(ctx, m, addr, cfg)
		},
	}
	share := dnsmsg.ServerConfig{Socket: nm.SocketConfig{SharePort: true}}
	for name, fn := range listen {
		a, err := fn("127.0.0.1:0", share)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := fn(a.Addr().String(), dnsmsg.ServerConfig{}); !errors.Is(err, syscall.EADDRINUSE) {
			if err == nil {
				b.Close()
			}
			t.Errorf("%s: second listener without SharePort: %v; want EADDRINUSE", name, err)
		}
		b, err := fn(a.Addr().String(), share)
		if err != nil {
			t.Errorf("%s: second listener with SharePort: %v", name, err)
		} else {
			b.Close()
			nmtest.ExpectFinal(t, b.Requests(), 0, nm.ErrCanceled)
		}
		a.Close()
		nmtest.ExpectFinal(t, a.Requests(), 0, nm.ErrCanceled)
	}
}
