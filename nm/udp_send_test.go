package nm_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// rawClient is a plain UDP socket on loopback, so that the manager's
// counters are the listener's alone.
type rawClient struct {
	t    testing.TB
	conn *net.UDPConn
	buf  []byte
}

func newRawClient(t testing.TB, l *nm.UDPListener) *rawClient {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(l.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, buf: make([]byte, 2048)}
}

func (c *rawClient) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next datagram; nmtest.Timeout is a failure bound.
func (c *rawClient) recv() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	n, err := c.conn.Read(c.buf)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(c.buf[:n])
}

// poll waits until cond holds; nmtest.Timeout is a failure bound.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, nmtest.Timeout)
		}
		time.Sleep(time.Millisecond) // polling, not waiting for the event
	}
}

func udpStats(m *nm.Manager) nm.Totals { return m.Stats().Of(nm.UDP) }

// TestUDPBurstRepliesBatched: a consumer that replies in turn to a burst of
// requests sends the replies in a few sendmmsg calls, and the requests
// were read in a few recvmmsg calls.
func TestUDPBurstRepliesBatched(t *testing.T) {
	const n = 64
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{}) // Batch 32
	c := newRawClient(t, l)
	// While paused, the reader holds at most its first batch undelivered
	// and the rest of the burst waits in the kernel.
	m.Pause()
	for i := range n {
		c.send(fmt.Appendf(nil, "q%d", i))
	}
	m.Resume()
	poll(t, "burst delivered", func() bool { return len(l.Datagrams()) == n })
	reads := udpStats(m).Reads
	// Hold the reader in its next delivery, so that only the consumer's
	// Sends flush: no write made by the reader hides what Send does.
	m.Pause()
	c.send([]byte("wake"))
	poll(t, "wake read", func() bool { return udpStats(m).Reads == reads+1 })
	for range n {
		ev := <-l.Datagrams()
		if err := ev.Handle.Send(ev.Data); err != nil {
			t.Fatalf("Send: %v", err)
		}
		ev.Handle.Detach()
	}
	got := make(map[string]bool)
	for range n {
		got[c.recv()] = true
	}
	if len(got) != n {
		t.Errorf("%d distinct replies; want %d", len(got), n)
	}
	st := udpStats(m)
	t.Logf("%d requests in %d reads; %d replies in %d writes", n, reads, st.Sent, st.Writes)
	if reads > n/8 || st.Writes > n/8 || st.Sent != n {
		t.Errorf("%d reads, %d writes, %d sent; want at most %d reads and writes, %d sent", reads, st.Writes, st.Sent, n/8, n)
	}
	m.Resume()
	ev := nmtest.Next(t, l.Datagrams(), nmtest.Timeout)
	ev.Handle.Detach()
}

// TestUDPReplyNotHeldBySlowRequest: a reply queued while another request
// waited leaves although that request is then held unanswered.
func TestUDPReplyNotHeldBySlowRequest(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	c := newRawClient(t, l)
	c.send([]byte("fast"))
	c.send([]byte("slow"))
	poll(t, "both delivered", func() bool { return len(l.Datagrams()) == 2 })
	release := make(chan struct{})
	consumer := make(chan error, 1)
	go func() {
		ev := <-l.Datagrams()
		err := ev.Handle.Send(ev.Data) // the slow request is waiting: queued
		ev.Handle.Detach()
		ev = <-l.Datagrams()
		<-release
		if err == nil {
			err = ev.Handle.Send(ev.Data)
		}
		ev.Handle.Detach()
		consumer <- err
	}()
	if got := c.recv(); got != "fast" {
		t.Errorf("first reply %q; want %q", got, "fast")
	}
	close(release)
	if got := c.recv(); got != "slow" {
		t.Errorf("second reply %q; want %q", got, "slow")
	}
	if err := <-consumer; err != nil {
		t.Errorf("Send: %v", err)
	}
}

// TestUDPLowLoadReplyAtOnce: one query at a time, each reply leaves at once,
// in its own write.
func TestUDPLowLoadReplyAtOnce(t *testing.T) {
	const n = 20
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	wait := serve(t, l, echo)
	c := newRawClient(t, l)
	for i := range n {
		q := fmt.Sprintf("q%d", i)
		c.send([]byte(q))
		if got := c.recv(); got != q {
			t.Fatalf("reply %q; want %q", got, q)
		}
	}
	l.Close()
	wait() // the consumer's Sends have returned: their writes are counted
	if st := udpStats(m); st.Sent != n || st.Writes != n {
		t.Errorf("%d sent in %d writes; want %d in %d", st.Sent, st.Writes, n, n)
	}
}

// TestUDPReplyQueueFullDrops: while a flush is held, Sends fill the queue
// to its bound; the next ones fail at once with ErrOutputFull, counted, and
// what was queued is sent when the flush goes on (11 replies: two
// sendmmsg of at most 8, eight receive batches of one).
func TestUDPReplyQueueFullDrops(t *testing.T) {
	const batch, limit, extra = 1, 12, 2
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{Batch: batch, Replies: limit})
	c := newRawClient(t, l)
	for i := range limit + extra {
		c.send(fmt.Appendf(nil, "q%d", i))
	}
	var evs []nm.Event
	for range limit + extra {
		evs = append(evs, nmtest.Next(t, l.Datagrams(), nmtest.Timeout))
	}
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	nm.SetReplyHook(l, func() { // flushes run one at a time
		if first {
			first = false
			close(entered)
			<-release
		}
	})
	flushed := make(chan error, 1)
	go func() { flushed <- evs[0].Handle.Send(evs[0].Data) }() // no request waits: it flushes
	<-entered
	sends := make(chan []error, 1)
	go func() {
		var errs []error
		for _, ev := range evs[1:] {
			errs = append(errs, ev.Handle.Send(ev.Data))
		}
		sends <- errs
	}()
	var errs []error
	select {
	case errs = <-sends:
	case <-time.After(nmtest.Timeout):
		t.Fatal("Send waited for the flush")
	}
	for i, err := range errs {
		want := error(nil)
		if i >= limit-1 {
			want = nm.ErrOutputFull
		}
		if !errors.Is(err, want) {
			t.Errorf("Send %d: %v; want %v", i+1, err, want)
		}
	}
	if st := udpStats(m); st.SendFailed != extra {
		t.Errorf("SendFailed = %d; want %d", st.SendFailed, extra)
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Errorf("first Send: %v", err)
	}
	got := make(map[string]bool)
	for range limit {
		got[c.recv()] = true
	}
	for i := range limit {
		if q := fmt.Sprintf("q%d", i); !got[q] {
			t.Errorf("no reply %q (got %v)", q, got)
		}
	}
	for _, ev := range evs {
		ev.Handle.Detach()
	}
	if st := udpStats(m); st.Sent != limit || st.Writes != 3 {
		t.Errorf("%d sent in %d writes; want %d in 3", st.Sent, st.Writes, limit)
	}
}

// TestUDPSendAsyncCompletesFromShard: SendAsync returns before its outcome
// is delivered (done has no buffer and nobody receives yet), and done then
// gets nil once the reply was written.
func TestUDPSendAsyncCompletesFromShard(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	c := newRawClient(t, l)
	c.send([]byte("q"))
	ev := nmtest.Next(t, l.Datagrams(), nmtest.Timeout)
	done := make(chan error)
	if err := ev.Handle.SendAsync(ev.Data, done); err != nil {
		t.Fatal(err)
	}
	if got := c.recv(); got != "q" {
		t.Errorf("reply %q; want %q", got, "q")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("done: %v", err)
		}
	case <-time.After(nmtest.Timeout):
		t.Fatal("no outcome on done")
	}
	ev.Handle.Detach()
}

// TestUDPSendAfterListenerClose: a request handle kept past its listener's
// end fails its Send at once.
func TestUDPSendAfterListenerClose(t *testing.T) {
	m := newManager(t, 1)
	l := listen(t, m, nm.UDPConfig{})
	c := newRawClient(t, l)
	c.send([]byte("q"))
	ev := nmtest.Next(t, l.Datagrams(), nmtest.Timeout)
	l.Close()
	nmtest.ExpectFinal(t, l.Datagrams(), 0, nm.ErrCanceled)
	if err := ev.Handle.Send(ev.Data); !errors.Is(err, nm.ErrClosed) {
		t.Errorf("Send after close: %v; want %v", err, nm.ErrClosed)
	}
	ev.Handle.Detach()
}
