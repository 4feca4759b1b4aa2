package nm_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// The logger a manager is given is rate-limited per message, whatever
// the level.
func TestManagerLoggerRateLimited(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	for range 100 {
		(*core.Manager)(m).Logger().Debug("test: flood", "n", 1)
		(*core.Manager)(m).Logger().Warn("test: other")
	}
	if n := len(logs.Records("test: flood")); n != core.LogBurst {
		t.Errorf("%d Debug records of 100 passed; want %d", n, core.LogBurst)
	}
	if n := len(logs.Records("test: other")); n != core.LogBurst {
		t.Errorf("%d Warn records of 100 passed; want %d", n, core.LogBurst)
	}
}

// A listener that cannot bind logs a warning with the address and the
// error.
func TestLogBindFailure(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.LocalAddr().String()
	if l, err := nm.ListenUDP(context.Background(), m, addr, nm.UDPConfig{}); err == nil {
		l.Close()
		t.Fatalf("listener bound %v, which another socket holds", addr)
	}
	logs.One(t, "nm: cannot listen", slog.LevelWarn, "addr", addr, "transport", "udp")
}

// Datagrams dropped because the consumer does not take them are logged,
// once per read rather than per datagram, with the listener's address.
func TestLogUDPQueueFull(t *testing.T) {
	const n = 20
	m, logs := nmtest.LogManager(t, 1)
	var seen atomic.Int32
	allSeen := make(chan struct{})
	l, err := nm.ListenUDP(context.Background(), m, "127.0.0.1:0", nm.UDPConfig{Queue: 4, Filter: func([]byte, netip.AddrPort) error {
		if seen.Add(1) == n {
			close(allSeen)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, m, l)
	defer c.Detach()
	for range n {
		c.Send([]byte("q"))
	}
	<-allSeen
	const msg = "nm: UDP queue full: consumers fell behind, requests dropped"
	r := logs.Wait(t, msg, nmtest.Timeout)
	if r.Level != slog.LevelWarn {
		t.Errorf("level %v; want Warn", r.Level)
	}
	if v, _ := nmtest.Attr(r, "addr"); v.Any() != l.Addr() {
		t.Errorf("addr %v; want %v", v, l.Addr())
	}
	l.Close()
	res := nmtest.Expect(t, l.Datagrams(), nmtest.Want{Min: 1, Max: n, Final: nm.ErrCanceled}, nmtest.Timeout)
	for _, h := range res.Handles {
		h.Detach()
	}
	var logged int64
	for _, r := range logs.Records(msg) {
		v, _ := nmtest.Attr(r, "dropped")
		logged += v.Int64()
	}
	if dropped := m.Stats().Of(nm.UDP).Dropped; logged < 1 || logged > dropped {
		t.Errorf("%d drops logged; want between 1 and the %d counted", logged, dropped)
	}
}

// A drain logs when it begins, with the requests in progress, and when it
// ends, whether it drained or was cut short, for each listener and for
// the manager.
func TestLogDrain(t *testing.T) {
	for _, cut := range []bool{false, true} {
		m, logs := nmtest.LogManager(t, 1)
		l := listen(t, m, nm.UDPConfig{})
		c := dial(t, m, l)
		c.Send([]byte("q"))
		req := nmtest.Next(t, l.Datagrams(), nmtest.Timeout)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Shutdown(ctx) }()
		begin := logs.Wait(t, "nm: UDP listener drain begins", nmtest.Timeout)
		if v, _ := nmtest.Attr(begin, "requests"); v.Int64() != 1 {
			t.Errorf("drain begins with %v requests; want 1", v)
		}
		if v, _ := nmtest.Attr(begin, "addr"); v.Any() != l.Addr() {
			t.Errorf("addr %v; want %v", v, l.Addr())
		}
		mb := logs.Wait(t, "nm: shutdown begins", nmtest.Timeout)
		if v, _ := nmtest.Attr(mb, "listeners"); v.Int64() != 1 {
			t.Errorf("shutdown begins with %v listeners; want 1", v)
		}
		if cut {
			cancel()
		} else {
			req.Handle.Detach()
		}
		if err := <-done; (err != nil) != cut {
			t.Fatalf("Shutdown: %v", err)
		}
		cancel()
		for _, msg := range []string{"nm: UDP listener drain ended", "nm: shutdown ended"} {
			recs := logs.Records(msg)
			if len(recs) != 1 {
				t.Fatalf("%d records %q; want 1", len(recs), msg)
			}
			r := recs[0]
			if r.Level != slog.LevelInfo {
				t.Errorf("%q at %v; want Info", msg, r.Level)
			}
			if v, _ := nmtest.Attr(r, "drained"); v.Bool() == cut {
				t.Errorf("%q: drained=%v after a drain cut=%v", msg, v, cut)
			}
			if _, ok := nmtest.Attr(r, "took"); !ok {
				t.Errorf("%q without took", msg)
			}
			if v, ok := nmtest.Attr(r, "err"); ok != cut || (cut && !errors.Is(v.Any().(error), context.Canceled)) {
				t.Errorf("%q: err %v; want one (context.Canceled) only when cut", msg, v)
			}
		}
		if cut {
			req.Handle.Detach()
		}
		c.Detach()
		m.Close()
	}
}
