package nm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// shortTimeout is a client read timeout for tests that expect timeouts.
const shortTimeout = 30 * time.Millisecond

func newManager(t testing.TB, workers int) *nm.Manager { return nmtest.Manager(t, workers) }

func listen(t testing.TB, m *nm.Manager, cfg nm.UDPConfig) *nm.UDPListener {
	t.Helper()
	l, err := nm.ListenUDP(context.Background(), m, "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func dial(t testing.TB, m *nm.Manager, l *nm.UDPListener) nm.Handle {
	t.Helper()
	h, err := nm.DialUDP(context.Background(), m, l.Addr().String(), nm.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// serve answers every datagram on l with reply (see nmtest.Serve).
func serve(t testing.TB, l *nm.UDPListener, reply func(b []byte) [][]byte) (wait func() nmtest.Result) {
	return nmtest.Serve(t, l.Datagrams(), reply)
}

func echo(b []byte) [][]byte { return [][]byte{b} }

func TestUDPListenCloseNoTraffic(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	l.Close()
	l.Close()
	nmtest.ExpectFinal(t, l.Datagrams(), 0, nm.ErrCanceled)
	m.Close()
	st := m.Stats().Of(nm.UDP)
	if st.Opened != 2 || st.Closed != 2 || st.Active != 0 || st.Received != 0 {
		t.Errorf("stats = %+v; want 2 opened and closed, none active, none received", st)
	}
}

func TestUDPNoResponse(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, func([]byte) [][]byte { return nil })
	h := dial(t, m, l)
	h.SetReadTimeout(shortTimeout)
	if err := h.Send([]byte("query")); err != nil {
		t.Fatal(err)
	}
	nmtest.NextErr(t, h.Read(), nm.ErrTimedOut)
	// Exactly one event for the one read: closing now, with no read armed,
	// yields only the final event.
	h.Close()
	nmtest.ExpectFinal(t, h.Read(), 0, nm.ErrShuttingDown)
	h.Detach()
	l.Close()
	if r := wait(); len(r.Data) != 1 {
		t.Errorf("server got %d datagrams; want 1", len(r.Data))
	}
}

func TestUDPTimeoutRecovery(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	release := make(chan struct{})
	wait := serve(t, l, func(b []byte) [][]byte {
		<-release
		return echo(b)
	})
	h := dial(t, m, l)
	h.SetReadTimeout(shortTimeout)
	if err := h.Send([]byte("query")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		nmtest.NextErr(t, h.Read(), nm.ErrTimedOut)
	}
	close(release)
	h.SetReadTimeout(nmtest.Timeout)
	ev := nmtest.NextErr(t, h.Read(), nil)
	if string(ev.Data) != "query" || ev.Handle != h {
		t.Errorf("reply %q on %v; want %q on %v", ev.Data, ev.Handle, "query", h)
	}
	h.Close()
	nmtest.ExpectFinal(t, h.Read(), 0, nm.ErrShuttingDown)
	h.Detach()
	l.Close()
	wait()
}

func TestUDPManagerCloseDuringRead(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, func([]byte) [][]byte { return nil })
	h := dial(t, m, l)
	h.Send([]byte("query"))
	ch := h.Read()
	m.Close()
	nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
	if r := wait(); !errors.Is(r.Final, nm.ErrCanceled) {
		t.Errorf("listener final %v; want %v", r.Final, nm.ErrCanceled)
	}
	if err := h.Send([]byte("late")); err == nil {
		t.Error("Send after manager Close succeeded")
	}
	h.Detach()
}

func TestUDPCancelRead(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, func([]byte) [][]byte { return nil })

	h := dial(t, m, l)
	ch := h.Read()
	h.Close()
	nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
	if err := h.Send([]byte("x")); err == nil {
		t.Error("Send on a closed handle succeeded")
	}
	h.Detach()

	// ReadStop, then close: the handle was dormant.
	h = dial(t, m, l)
	ch = h.Read()
	h.ReadStop()
	h.Detach()
	nmtest.ExpectFinal(t, ch, 0, nm.ErrShuttingDown)

	// Never read: no event at all, and the socket is still released.
	h = dial(t, m, l)
	h.Detach()
	l.Close()
	wait()
	m.Close()
	if st := m.Stats().Of(nm.UDP); st.Active != 0 || st.Opened != st.Closed {
		t.Errorf("stats = %+v; want every socket closed", st)
	}
}

func TestUDPReadStopKeepsDatagram(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, echo)
	h := dial(t, m, l)
	defer h.Detach()
	h.Read()
	h.ReadStop()
	h.Send([]byte("one"))
	// The reply waits (in the kernel or the handle) for the next Read.
	if ev := nmtest.NextErr(t, h.Read(), nil); string(ev.Data) != "one" {
		t.Errorf("got %q; want %q", ev.Data, "one")
	}
	l.Close()
	wait()
}

func exchangeN(t testing.TB, h nm.Handle, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		q := fmt.Appendf(nil, "query %d", i)
		if err := h.Send(q); err != nil {
			t.Errorf("Send: %v", err)
			return
		}
		ev := nmtest.Next(t, h.Read(), nmtest.Timeout)
		if ev.Err != nil || !bytes.Equal(ev.Data, q) {
			t.Errorf("reply %q, %v; want %q", ev.Data, ev.Err, q)
			return
		}
	}
}

func TestUDPOneAndTwoClients(t *testing.T) {
	for _, clients := range []int{1, 2} {
		t.Run(fmt.Sprint(clients), func(t *testing.T) {
			m := newManager(t, 2)
			l := listen(t, m, nm.UDPConfig{})
			wait := serve(t, l, echo)
			var wg sync.WaitGroup
			for i := 0; i < clients; i++ {
				h := dial(t, m, l)
				wg.Go(func() {
					defer h.Detach()
					exchangeN(t, h, 10)
				})
			}
			wg.Wait()
			l.Close()
			if r := wait(); len(r.Data) != 10*clients {
				t.Errorf("server got %d; want %d", len(r.Data), 10*clients)
			}
		})
	}
}

func TestUDPEveryShard100(t *testing.T) {
	const workers, n = 4, 100
	m := newManager(t, workers)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, echo)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		h := dial(t, m, l) // round-robin: one client per shard
		if core.Handle(h).Shard().ID() != i {
			t.Fatalf("client %d on shard %d", i, core.Handle(h).Shard().ID())
		}
		wg.Go(func() {
			defer h.Detach()
			exchangeN(t, h, n)
		})
	}
	wg.Wait()
	l.Close()
	if r := wait(); len(r.Data) != workers*n {
		t.Errorf("server got %d; want %d", len(r.Data), workers*n)
	}
	m.Close()
	for i := 0; i < workers; i++ {
		// Each shard ran one client (n sent, n received) and one listening
		// socket, which the kernel fed some share of the queries.
		st := m.ShardStats(i).Of(nm.UDP)
		if st.Opened != 2 || st.Closed != 2 || st.Received != st.Sent || st.Received < n {
			t.Errorf("shard %d stats = %+v", i, st)
		}
	}
	st := m.Stats().Of(nm.UDP)
	want := nm.Totals{Opened: 2 * workers, Closed: 2 * workers, Received: 2 * workers * n, Sent: 2 * workers * n,
		Reads: st.Reads, Writes: st.Writes}
	if st != want || st.Reads < workers*n || st.Writes < workers*n {
		t.Errorf("stats = %+v; want %+v", st, want)
	}
}

func TestUDPTwoDatagramReply(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, func(b []byte) [][]byte {
		return [][]byte{append([]byte("1:"), b...), append([]byte("2:"), b...)}
	})
	h := dial(t, m, l)
	h.Send([]byte("q"))
	for _, want := range []string{"1:q", "2:q"} {
		if ev := nmtest.NextErr(t, h.Read(), nil); string(ev.Data) != want {
			t.Errorf("got %q; want %q", ev.Data, want)
		}
	}
	h.Close()
	nmtest.ExpectFinal(t, h.Read(), 0, nm.ErrShuttingDown)
	h.Detach()
	l.Close()
	wait()
}

func TestUDPOversizedAndFilteredDropped(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{MaxSize: 512, Filter: func(b []byte, _ netip.AddrPort) error {
		if len(b) < 2 {
			return nm.ErrBadMessage
		}
		return nil
	}})
	wait := serve(t, l, echo)
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, b := range [][]byte{make([]byte, 513), {}, {1}, []byte("ok")} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 600)
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("read %q, %v; want %q", buf[:n], err, "ok")
	}
	l.Close()
	if r := wait(); len(r.Data) != 1 {
		t.Errorf("delivered %d; want 1", len(r.Data))
	}
	if st := m.Stats().Of(nm.UDP); st.Dropped != 3 || st.Received != 4 {
		t.Errorf("stats = %+v; want 4 received, 3 dropped", st)
	}
}

func TestUDPIPv6(t *testing.T) {
	m := newManager(t, 2)
	l, err := nm.ListenUDP(context.Background(), m, "[::1]:0", nm.UDPConfig{})
	if err != nil {
		nmtest.SkipOutsideCI(t, "no IPv6 loopback: %v", err)
	}
	wait := serve(t, l, echo)
	h, err := nm.DialUDP(context.Background(), m, l.Addr().String(), nm.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	exchangeN(t, h, 3)
	if !h.PeerAddr().Addr().Is6() || h.PeerAddr() != l.Addr() {
		t.Errorf("peer %v; want %v", h.PeerAddr(), l.Addr())
	}
	h.Detach()
	l.Close()
	wait()
}
