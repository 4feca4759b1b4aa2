package stream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

func TestListenConnectNoTraffic(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		s := accept(t, l)
		if s.PeerAddr() != c.LocalAddr() || s.LocalAddr() != c.PeerAddr() {
			t.Errorf("server sees %v -> %v; client is %v -> %v", s.PeerAddr(), s.LocalAddr(), c.LocalAddr(), c.PeerAddr())
		}
		l.Close()
		nmtest.ExpectFinal(t, l.Conns(), 0, nm.ErrCanceled)
		c.Detach()
		s.Detach()
		m.Close()
		st := m.Stats().Of(k.stat)
		// The listening sockets and 1 client opened; 1 accepted; all closed.
		socks := int64(k.sockets(2))
		if st.Opened != socks+1 || st.Accepted != 1 || st.Closed != socks+2 || st.Active != 0 || st.Received != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestServerNeverReads(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		s := accept(t, l)
		if err := c.Send([]byte("hello?")); err != nil {
			t.Fatal(err)
		}
		ch := c.Read()
		m.Close()
		// The client's read ends with exactly one final event; the server
		// handle, never read, gets none and is released.
		nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
		c.Detach()
		s.Detach()
	})
}

func TestShutdownBeforeConnect(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{})
		addr := l.Addr().String()
		m.Close()
		h, err := k.dial(context.Background(), m, addr, stream.Config{})
		if !errors.Is(err, nm.ErrShuttingDown) || !h.IsZero() {
			t.Errorf("Dial after Close = %v, %v; want nil, ErrShuttingDown", h, err)
		}
		if _, err := k.listen(context.Background(), m, "127.0.0.1:0", stream.Config{}); !errors.Is(err, nm.ErrShuttingDown) {
			t.Errorf("Listen after Close: %v; want ErrShuttingDown", err)
		}
	})
}

func TestDialRefusedAndTimedOut(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{})
		addr := l.Addr().String()
		l.Close()
		nmtest.ExpectFinal(t, l.Conns(), 0, nm.ErrCanceled)
		if _, err := k.dial(context.Background(), m, addr, stream.Config{}); !errors.Is(err, nm.ErrConnRefused) {
			t.Errorf("Dial to a closed port: %v; want ErrConnRefused", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := k.dial(ctx, m, addr, stream.Config{}); !errors.Is(err, nm.ErrCanceled) {
			t.Errorf("Dial with a canceled context: %v; want ErrCanceled", err)
		}
	})
}

func TestShutdownWithReadAndSendPending(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		s := accept(t, l)
		defer s.Detach()
		// The server never reads, so 32 MiB cannot all be written: the send
		// stays pending.
		big := make([]byte, 32<<20)
		done := make(chan error, 1)
		if err := c.SendAsync(big, done); err != nil {
			t.Fatal(err)
		}
		ch := c.Read()
		m.Close()
		nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
		select {
		case err := <-done:
			if err == nil {
				t.Error("pending send completed without error")
			}
		case <-time.After(nmtest.Timeout):
			t.Fatal("pending send never completed")
		}
		select {
		case err := <-done:
			t.Errorf("second completion %v", err)
		default:
		}
		c.Detach()
	})
}

func TestClientTimeoutRecovery(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{Timeouts: nm.Timeouts{Read: 30 * time.Millisecond}})
		defer c.Detach()
		s := accept(t, l)
		defer s.Detach()
		for i := 0; i < 4; i++ {
			nmtest.NextErr(t, c.Read(), nm.ErrTimedOut)
		}
		s.Send([]byte("late"))
		c.SetReadTimeout(nmtest.Timeout)
		if got := readN(t, c, 4); string(got) != "late" {
			t.Errorf("got %q; want %q", got, "late")
		}
	})
}

func TestServerIdleTimeoutIsFinal(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{Timeouts: nm.Timeouts{Initial: 30 * time.Millisecond}})
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		s := accept(t, l)
		defer s.Detach()
		nmtest.ExpectFinal(t, s.Read(), 0, nm.ErrTimedOut)
		// The client sees the server close.
		nmtest.ExpectFinal(t, c.Read(), 0, nm.ErrEOF)
	})
}

func TestEchoOneAndTwoConnections(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		for _, n := range []int{1, 2} {
			m := newManager(t, 2)
			l := k.mustListen(t, m, stream.Config{})
			wait := echoServer(l)
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				c := k.mustDial(t, m, l, stream.Config{})
				wg.Go(func() {
					defer c.Detach()
					msg := fmt.Appendf(nil, "hello from %d", i)
					for j := 0; j < 10; j++ {
						if err := c.Send(msg); err != nil {
							t.Error(err)
							return
						}
						if got := readN(t, c, len(msg)); !bytes.Equal(got, msg) {
							t.Errorf("echo %q; want %q", got, msg)
						}
					}
				})
			}
			wg.Wait()
			m.Close()
			wait()
		}
	})
}

func TestEveryShard100Messages(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		const workers, n = 4, 100
		m := newManager(t, workers)
		l := k.mustListen(t, m, stream.Config{})
		wait := echoServer(l)
		var wg sync.WaitGroup
		for i := 0; i < workers; i++ {
			c := k.mustDial(t, m, l, stream.Config{})
			if core.Handle(c).Shard().ID() != i {
				t.Fatalf("client %d on shard %d", i, core.Handle(c).Shard().ID())
			}
			wg.Go(func() {
				defer c.Detach()
				for j := 0; j < n; j++ {
					msg := fmt.Appendf(nil, "client %d message %03d", i, j)
					c.Send(msg)
					if got := readN(t, c, len(msg)); !bytes.Equal(got, msg) {
						t.Errorf("echo %q; want %q", got, msg)
						return
					}
				}
			})
		}
		wg.Wait()
		m.Close()
		wait()
		st := m.Stats().Of(k.stat)
		// Clients sent n messages each; the server echoed every chunk it
		// read, and the clients read them all back.
		clientSent := int64(workers * n)
		serverSent := st.Sent - clientSent
		socks := int64(k.sockets(workers))
		if st.Accepted != workers || st.Opened != socks+workers || st.Closed != socks+2*workers || st.Active != 0 ||
			serverSent < clientSent || st.Received < 2*clientSent || st.SendFailed != 0 || st.RecvFailed != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestQuotaOneSecondWaits(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{MaxConns: 1})
		c1 := k.mustDial(t, m, l, stream.Config{})
		s1 := accept(t, l)
		// The second connection completes in the kernel's backlog, but is
		// not accepted while the first one holds the only slot.
		c2done := make(chan nm.Handle, 1)
		go func() {
			c2, err := k.dial(context.Background(), m, l.Addr().String(), stream.Config{})
			if err != nil {
				t.Error(err)
			}
			c2done <- c2
		}()
		if k.name == "tcp" {
			c2 := <-c2done
			defer c2.Detach()
		}
		select {
		case ev := <-l.Conns():
			t.Fatalf("second connection delivered while the first is open: %v", ev)
		case <-time.After(quiet):
		}
		c1.Detach()
		s1.Detach()
		s2 := accept(t, l)
		defer s2.Detach()
		if k.name == "tls" {
			c2 := <-c2done
			defer c2.Detach()
		}
		s2.Send([]byte("hi"))
	})
}

func TestQuotaRefuse(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{MaxConns: 1, RefuseAtCap: true})
		c1 := k.mustDial(t, m, l, stream.Config{})
		defer c1.Detach()
		s1 := accept(t, l)
		defer s1.Detach()
		c2, err := k.dial(context.Background(), m, l.Addr().String(), stream.Config{})
		if err == nil {
			// TCP connects before the server refuses; the refusal is a close.
			nmtest.ExpectFinal(t, c2.Read(), 0, nil)
			c2.Detach()
		}
		if st := m.Stats().Of(k.stat); st.Refused != 1 {
			t.Errorf("refused %d; want 1", st.Refused)
		}
	})
}

func TestReadStopThenCloseIsShuttingDown(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		s := accept(t, l)
		ch := s.Read()
		s.ReadStop()
		c.Send([]byte("not delivered"))
		m.Close()
		nmtest.ExpectFinal(t, ch, 0, nm.ErrShuttingDown)
		c.Detach()
		s.Detach()
	})
}

// The manager closing while a conversation is read ends it with
// ErrCanceled, as closing its handle does.
func TestManagerCloseWhileReadingIsCanceled(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		s := accept(t, l)
		ch, cch := s.Read(), c.Read()
		m.Close()
		nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
		nmtest.ExpectFinal(t, cch, 0, nm.ErrCanceled)
		c.Detach()
		s.Detach()
	})
}

func TestCloseWhileReadingIsCanceled(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		s := accept(t, l)
		ch := s.Read()
		s.Close()
		nmtest.ExpectFinal(t, ch, 0, nm.ErrCanceled)
		if err := s.Send([]byte("x")); err == nil {
			t.Error("Send on a closed handle succeeded")
		}
		s.Detach()
		nmtest.ExpectFinal(t, c.Read(), 0, nm.ErrEOF)
	})
}

func TestEchoOneMiB(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		wait := echoServer(l)
		c := k.mustDial(t, m, l, stream.Config{})
		msg := make([]byte, 1<<20)
		rand.Read(msg)
		done := make(chan error, 1)
		if err := c.SendAsync(msg, done); err != nil {
			t.Fatal(err)
		}
		got := readN(t, c, len(msg))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Error("1 MiB echo differs")
		}
		c.Detach()
		m.Close()
		wait()
	})
}

func TestBackpressureStopsReading(t *testing.T) {
	m := newManager(t, 1)
	l := kinds[0].mustListen(t, m, stream.Config{Backpressure: 64 << 10, Timeouts: nm.Timeouts{Write: -1}})
	c := kinds[0].mustDial(t, m, l, stream.Config{})
	defer c.Detach()
	s := accept(t, l)
	defer s.Detach()
	// The server echoes with SendAsync; the client sends 64 MiB and does
	// not read. Once 64 KiB wait unsent, the server stops reading, so the
	// client's send cannot finish: the kernel's buffers hold far less.
	const size = 64 << 20
	var read atomic.Int64
	done := make(chan error, 1<<16)
	go func() {
		for ev := range s.Read() {
			if ev.Err == nil {
				read.Add(int64(len(ev.Data)))
				s.SendAsync(append([]byte(nil), ev.Data...), done)
			}
		}
	}()
	big := make([]byte, size)
	sent := make(chan error, 1)
	c.SendAsync(big, sent)
	select {
	case err := <-sent:
		t.Fatalf("64 MiB went through a server that should have stopped reading (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if n := read.Load(); n == 0 || n > size/2 {
		t.Errorf("server read %d bytes while its peer did not read", n)
	}
	// Reading resumes as the client drains.
	readN(t, c, size)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

func TestAcceptFilter(t *testing.T) {
	forKindsAndQuota(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		var calls atomic.Int32
		l := k.mustListen(t, m, stream.Config{Accept: func(peer, local netip.AddrPort) error {
			if calls.Add(1) == 1 {
				return errors.New("not you")
			}
			return nil
		}})
		c1, err := k.dial(context.Background(), m, l.Addr().String(), stream.Config{})
		if err == nil {
			nmtest.ExpectFinal(t, c1.Read(), 0, nil)
			c1.Detach()
		}
		c2 := k.mustDial(t, m, l, stream.Config{})
		defer c2.Detach()
		s := accept(t, l)
		defer s.Detach()
		if s.PeerAddr() != c2.LocalAddr() {
			t.Errorf("delivered %v; want the second client %v", s.PeerAddr(), c2.LocalAddr())
		}
		if st := m.Stats().Of(k.stat); st.Dropped != 1 || st.Accepted != 2 {
			t.Errorf("stats %+v; want 2 accepted, 1 dropped", st)
		}
	})
}

func TestHalfClose(t *testing.T) {
	m := newManager(t, 1)
	l := kinds[0].mustListen(t, m, stream.Config{})
	c := kinds[0].mustDial(t, m, l, stream.Config{})
	defer c.Detach()
	s := accept(t, l)
	defer s.Detach()
	c.Send([]byte("query"))
	if err := stream.CloseWrite(c); err != nil {
		t.Fatal(err)
	}
	r := nmtest.ExpectFinal(t, s.Read(), 1, nm.ErrEOF)
	if string(r.Data[0]) != "query" {
		t.Errorf("server read %q", r.Data[0])
	}
	// The server's side is still open: the reply reaches the client.
	if err := s.Send([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, c, 5); string(got) != "reply" {
		t.Errorf("client read %q", got)
	}
}

func TestSendsInOrderFromManyGoroutines(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 2)
		l := k.mustListen(t, m, stream.Config{})
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		s := accept(t, l)
		defer s.Detach()
		// One goroutine queues 200 messages with SendAsync while four
		// others Send; each goroutine's messages arrive whole and in order.
		const n = 200
		done := make(chan error, n)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; i < n; i++ {
				if err := s.SendAsync(fmt.Appendf(nil, "[a %03d]", i), done); err != nil {
					t.Error(err)
				}
			}
		})
		for g := 0; g < 4; g++ {
			wg.Go(func() {
				for i := 0; i < n; i++ {
					if err := s.Send(fmt.Appendf(nil, "[%d %03d]", g, i)); err != nil {
						t.Error(err)
					}
				}
			})
		}
		got := readN(t, c, 5*n*len("[a 000]"))
		wg.Wait()
		for i := 0; i < n; i++ {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		next := map[byte]int{}
		for i := 0; i < len(got); i += 7 {
			var who byte
			var seq int
			if _, err := fmt.Sscanf(string(got[i:i+7]), "[%c %03d]", &who, &seq); err != nil {
				t.Fatalf("garbled at %d: %q", i, got[i:i+7])
			}
			if seq != next[who] {
				t.Fatalf("sender %c: message %d after %d", who, seq, next[who]-1)
			}
			next[who]++
		}
	})
}

func TestKeepaliveReplacesIdle(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{Timeouts: nm.Timeouts{Idle: 20 * time.Millisecond, Keepalive: nmtest.Timeout}})
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		s := accept(t, l)
		defer s.Detach()
		c.Send([]byte("1"))
		if ev := nmtest.NextErr(t, s.Read(), nil); string(ev.Data) != "1" {
			t.Fatalf("read %q", ev.Data)
		}
		s.SetKeepalive(true)
		// Well past the idle timeout, the connection is still up.
		select {
		case ev := <-s.Read():
			t.Fatalf("event %v during keepalive", ev.Err)
		case <-time.After(5 * quiet):
		}
		s.SetKeepalive(false)
		nmtest.ExpectFinal(t, s.Read(), 0, nm.ErrTimedOut)
	})
}

// TestServerIdleTimeoutWithSteadyTraffic: a connection that talks more
// often than its idle timeout stays open for as long as it talks (the read
// deadline is re-armed lazily, so some reads outlive the deadline first
// set for them), and is closed once it falls silent.
func TestServerIdleTimeoutWithSteadyTraffic(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		const idle = 500 * time.Millisecond
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{Timeouts: nm.Timeouts{Idle: idle}})
		wait := echoServer(l)
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		ch := c.Read()
		start := time.Now()
		var lastSend time.Time
		for i := 0; time.Since(start) < 2*idle; i++ {
			lastSend = time.Now()
			if err := c.Send([]byte("ping")); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			if ev := nmtest.Next(t, ch, nmtest.Timeout); ev.Err != nil {
				t.Fatalf("echo %d, %v after the first: %v", i, time.Since(start), ev.Err)
			}
			time.Sleep(idle / 20) // the pace of the talk, not a wait for an event
		}
		nmtest.ExpectFinal(t, ch, 0, nm.ErrEOF)
		if d := time.Since(lastSend); d < idle {
			t.Errorf("closed %v after the last message, before the idle timeout", d)
		}
		l.Close()
		wait()
	})
}
