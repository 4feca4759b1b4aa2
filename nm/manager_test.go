package nm_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// quiet is how long the pause tests watch for activity that must not
// happen. It bounds a negative check, so it cannot make a correct
// implementation fail.
const quiet = 50 * time.Millisecond

func TestManagerDefaultsAndClose(t *testing.T) {
	m, err := nm.New(nm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Workers() < 1 {
		t.Fatalf("Workers() = %d", m.Workers())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-(*core.Manager)(m).Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if _, err := nm.ListenUDP(context.Background(), m, "127.0.0.1:0", nm.UDPConfig{}); !errors.Is(err, nm.ErrShuttingDown) {
		t.Errorf("ListenUDP after Close: %v; want ErrShuttingDown", err)
	}
	if err := (*core.Manager)(m).Shard(0).Post(func() {}); !errors.Is(err, nm.ErrShuttingDown) {
		t.Errorf("Post after Close: %v; want ErrShuttingDown", err)
	}
	if err := m.Pause(); !errors.Is(err, nm.ErrShuttingDown) {
		t.Errorf("Pause after Close: %v; want ErrShuttingDown", err)
	}
	if _, err := nm.New(nm.Config{Workers: -1}); err == nil {
		t.Error("New with -1 workers succeeded")
	}
}

func TestManagerLockedAndPinned(t *testing.T) {
	m, err := nm.New(nm.Config{Workers: 2, Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, echo)
	h := dial(t, m, l)
	exchangeN(t, h, 5)
	h.Detach()
	m.Close()
	wait()
}

func TestPostRunsInOrderOnShard(t *testing.T) {
	m := newManager(t, 2)
	var got []int
	done := make(chan struct{})
	for i := 0; i < 100; i++ {
		(*core.Manager)(m).Shard(1).Post(func() {
			got = append(got, i) // only the shard's loop touches got
			if i == 99 {
				close(done)
			}
		})
	}
	<-done
	for i, v := range got {
		if v != i {
			t.Fatalf("job %d ran as %d", v, i)
		}
	}
	// A panicking job is contained.
	ran := make(chan struct{})
	(*core.Manager)(m).Shard(0).Post(func() { panic("boom") })
	(*core.Manager)(m).Shard(0).Post(func() { close(ran) })
	<-ran
}

func TestPauseResumeErrors(t *testing.T) {
	m := newManager(t, 2)
	if err := m.Resume(); !errors.Is(err, nm.ErrNotPaused) {
		t.Errorf("Resume unpaused: %v", err)
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(); !errors.Is(err, nm.ErrPaused) {
		t.Errorf("nested Pause: %v; want ErrPaused", err)
	}
	ran := make(chan struct{})
	(*core.Manager)(m).Shard(0).Post(func() { close(ran) })
	select {
	case <-ran:
		t.Fatal("job ran while paused")
	case <-time.After(quiet):
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	<-ran
	// Close while paused resumes and shuts down.
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func TestPauseResumeUnderLoad(t *testing.T) {
	m := newManager(t, 2)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, echo)
	var stop atomic.Bool
	// progress gets a token per answer, dropped when nobody waits.
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		h := dial(t, m, l)
		h.SetReadTimeout(20 * time.Millisecond)
		wg.Go(func() {
			defer h.Detach()
			for !stop.Load() {
				h.Send([]byte("q"))
				ev := nmtest.Next(t, h.Read(), nmtest.Timeout)
				switch {
				case ev.Err == nil:
					select {
					case progress <- struct{}{}:
					default:
					}
				case !errors.Is(ev.Err, nm.ErrTimedOut):
					t.Errorf("client: %v", ev.Err)
					return
				}
			}
		})
	}
	for round := 0; round < 10; round++ {
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
		before := m.Stats().Of(nm.UDP).Received
		time.Sleep(quiet) // a window in which nothing may happen, not a wait for an event
		if after := m.Stats().Of(nm.UDP).Received; after != before {
			t.Errorf("round %d: %d datagrams delivered while paused", round, after-before)
		}
		if err := m.Resume(); err != nil {
			t.Fatal(err)
		}
		// Traffic flows again: wait for some answers before the next pause.
		for i := 0; i < 20; i++ {
			<-progress
		}
	}
	stop.Store(true)
	wg.Wait()
	l.Close()
	wait()
}

type userValue struct {
	resets, closes atomic.Int32
}

func (u *userValue) Reset()       { u.resets.Add(1) }
func (u *userValue) Close() error { u.closes.Add(1); return nil }

func TestHandleRefsAndUserValue(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	c := dial(t, m, l)
	defer c.Detach()

	c.Send([]byte("1"))
	ev := <-l.Datagrams()
	h := ev.Handle
	if h.LocalAddr() != l.Addr() || h.PeerAddr() != c.LocalAddr() {
		t.Errorf("addresses %v <- %v; want %v <- %v", h.LocalAddr(), h.PeerAddr(), l.Addr(), c.LocalAddr())
	}
	u := &userValue{}
	h.SetData(u)
	h.Attach()
	if core.Handle(h).Refs() != 2 {
		t.Fatalf("Refs = %d; want 2", core.Handle(h).Refs())
	}
	h.Detach()
	h.Detach()
	if u.resets.Load() != 1 || u.closes.Load() != 0 {
		t.Errorf("after release: %d resets, %d closes; want 1, 0", u.resets.Load(), u.closes.Load())
	}
	mustPanic(t, "Detach on a released handle", h.Detach)
	mustPanic(t, "Attach on a released handle", func() { h.Attach() })

	// The released handle's state is reused for the next request, value
	// included, under a new handle: the old one stays released.
	c.Send([]byte("2"))
	ev = <-l.Datagrams()
	if ev.Handle == h || ev.Handle.Data() != u {
		t.Errorf("next request on %v with %v; want a new handle with the pooled value", ev.Handle, ev.Handle.Data())
	}
	if h.Data() != nil || core.Handle(h).Refs() != 0 {
		t.Errorf("released handle after reuse: data %v, %d refs; want nil, 0", h.Data(), core.Handle(h).Refs())
	}
	ev.Handle.Detach()
	l.Close()
	nmtest.ExpectFinal(t, l.Datagrams(), 0, nm.ErrCanceled)
	if u.resets.Load() != 2 || u.closes.Load() != 1 {
		t.Errorf("after listener close: %d resets, %d closes; want 2, 1", u.resets.Load(), u.closes.Load())
	}
}

func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, want) {
			t.Errorf("panic %v; want one saying %q", r, want)
		}
	}()
	fn()
}

func TestListenerQueueFullDropsAndFinalArrives(t *testing.T) {
	const n = 20
	m := newManager(t, 1)
	var seen atomic.Int32
	allSeen := make(chan struct{})
	l := listen(t, m, nm.UDPConfig{Queue: 4, Filter: func([]byte, netip.AddrPort) error {
		if seen.Add(1) == n {
			close(allSeen)
		}
		return nil
	}})
	c := dial(t, m, l)
	defer c.Detach()
	for i := 0; i < n; i++ {
		c.Send([]byte("q"))
	}
	<-allSeen
	l.Close()
	// Even with a full queue, the final event arrives (the oldest waiting
	// request makes room for it), and every drop is counted.
	r := nmtest.Expect(t, l.Datagrams(), nmtest.Want{Min: 1, Max: n, Final: nm.ErrCanceled}, nmtest.Timeout)
	for _, h := range r.Handles {
		h.Detach()
	}
	st := m.Stats().Of(nm.UDP)
	if st.Received != n || st.Dropped+int64(len(r.Data)) != n {
		t.Errorf("%d received, %d delivered + %d dropped; want %d = delivered + dropped", st.Received, len(r.Data), st.Dropped, n)
	}
	// Before anyone read, 19 datagrams had been through a queue of 4.
	if st.Dropped < n-1-4 {
		t.Errorf("%d dropped; want at least %d", st.Dropped, n-1-4)
	}
}

// TestCompleteAfterShutdown: once the manager is closed, a done channel
// with room still gets every outcome (a select between the two could pick
// the shutdown half the time); only a full one loses it, without blocking.
func TestCompleteAfterShutdown(t *testing.T) {
	m := nmtest.Manager(t, 1)
	m.Close()
	done := make(chan error, 100)
	for i := 0; i < 100; i++ {
		(*core.Manager)(m).Complete(done, nm.ErrCanceled)
	}
	if len(done) != 100 {
		t.Fatalf("%d of 100 outcomes delivered after shutdown; want all", len(done))
	}
	(*core.Manager)(m).Complete(done, nm.ErrCanceled) // full: dropped, returns
}
