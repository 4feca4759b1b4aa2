package dnsmsg_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

func listenKind(t *testing.T, m *nm.Manager, kind string) *dnsmsg.Listener {
	t.Helper()
	var l *dnsmsg.Listener
	var err error
	switch kind {
	case "udp":
		l, err = dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	case "tcp":
		l, err = dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	case "dot":
		l, err = dnsmsg.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, dnsmsg.ServerConfig{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// refusedSoon waits, within a failure bound, until new connections to addr
// are refused.
func refusedSoon(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(time.Millisecond) // polling a socket state, bounded above
	}
	t.Fatalf("connections to %s still accepted during the drain", addr)
}

// A slow answer in progress when the listener drains reaches its client;
// the drain takes no new request, refuses new connections, and ends when
// the answer has gone.
func TestShutdownDrains(t *testing.T) {
	for _, kind := range []string{"udp", "tcp", "dot"} {
		t.Run(kind, func(t *testing.T) {
			m := nmtest.Manager(t, 2)
			l := listenKind(t, m, kind)
			c := dialKind(t, m, kind, l.Addr().String())
			q := pack(t, query("slow.example"))
			if err := c.Send(q); err != nil {
				t.Fatal(err)
			}
			slow := nmtest.Next(t, l.Requests(), nmtest.Timeout)

			drained := make(chan error, 1)
			go func() { drained <- l.Shutdown(context.Background()) }()
			if kind == "udp" {
				// The readers stop: the final event comes at once.
				nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
			} else {
				refusedSoon(t, l.Addr().String())
			}
			// A query that comes during the drain is not taken.
			if err := c.Send(pack(t, query("late.example"))); err != nil && kind == "udp" {
				t.Fatal(err)
			}
			select {
			case err := <-drained:
				t.Fatalf("Shutdown returned %v with a request in progress", err)
			default:
			}

			// The slow answer goes out, and the drain ends.
			if err := slow.Handle.Send(asReply(slow.Data)[0]); err != nil {
				t.Fatalf("the reply in progress: %v", err)
			}
			slow.Handle.Detach()
			if ev := nmtest.NextErr(t, c.Read(), nil); dnsmsg.ID(ev.Data) != dnsmsg.ID(q) {
				t.Errorf("client got ID %d; want the slow answer's %d", dnsmsg.ID(ev.Data), dnsmsg.ID(q))
			}
			select {
			case err := <-drained:
				if err != nil {
					t.Errorf("Shutdown = %v; want nil", err)
				}
			case <-time.After(nmtest.Timeout):
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Log(string(buf[:n]))
				t.Fatal("Shutdown did not return after the last answer")
			}
			if kind != "udp" {
				// The late query was never delivered: the channel ends.
				nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
				// The connection ended after the reply: the next read
				// ends it.
				if ev := <-c.Read(); ev.Err == nil {
					t.Errorf("after the drain the client read %x; want the end of the connection", ev.Data)
				}
			}
		})
	}
}

// A drain whose context ends first closes the listener and says so.
func TestShutdownDeadline(t *testing.T) {
	for _, kind := range []string{"udp", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			m := nmtest.Manager(t, 1)
			l := listenKind(t, m, kind)
			c := dialKind(t, m, kind, l.Addr().String())
			c.Send(pack(t, query("never.example")))
			held := nmtest.Next(t, l.Requests(), nmtest.Timeout)
			defer held.Handle.Detach()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := l.Shutdown(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("Shutdown = %v; want context.Canceled", err)
			}
			nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
			if err := held.Handle.Send(asReply(held.Data)[0]); err == nil {
				t.Error("a reply after the aborted drain was sent; want an error")
			}
		})
	}
}

// Manager.Shutdown drains every listener, then closes the manager.
func TestManagerShutdown(t *testing.T) {
	m := nmtest.Manager(t, 1)
	udp := listenKind(t, m, "udp")
	tcp := listenKind(t, m, "tcp")
	cu := dialKind(t, m, "udp", udp.Addr().String())
	ct := dialKind(t, m, "tcp", tcp.Addr().String())
	qu, qt := pack(t, query("u.example")), pack(t, query("t.example"))
	cu.Send(qu)
	ct.Send(qt)
	ru := nmtest.Next(t, udp.Requests(), nmtest.Timeout)
	rt := nmtest.Next(t, tcp.Requests(), nmtest.Timeout)
	// The replies arrive before the manager closes; read them as they come.
	got := make(chan uint16, 2)
	for _, c := range []*dnsmsg.Conn{cu, ct} {
		go func() {
			if ev := <-c.Read(); ev.Err == nil {
				got <- dnsmsg.ID(ev.Data)
			} else {
				got <- 0
			}
		}()
	}
	done := make(chan error, 1)
	go func() { done <- m.Shutdown(context.Background()) }()
	refusedSoon(t, tcp.Addr().String())
	for _, r := range []nm.Event{ru, rt} {
		if err := r.Handle.Send(asReply(r.Data)[0]); err != nil {
			t.Fatal(err)
		}
		r.Handle.Detach()
	}
	ids := map[uint16]bool{<-got: true, <-got: true}
	if !ids[dnsmsg.ID(qu)] || !ids[dnsmsg.ID(qt)] {
		t.Errorf("replies %v; want IDs %d and %d", ids, dnsmsg.ID(qu), dnsmsg.ID(qt))
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if !(*core.Manager)(m).Closing() {
		t.Error("the manager is not closed after Shutdown")
	}
}
