package dnsmsg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// A consumer that answers but never releases its requests (a leaked
// reference) cannot pin a connection: past the request timeout each
// request's place is reclaimed, counted, the connection takes the next
// requests, and once nothing is in flight its idle timer closes it.
func TestLeakedRequestsExpire(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		const n = 30 // more than the in-flight bound (23)
		m := nmtest.Manager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{
			RequestTimeout: 50 * time.Millisecond,
			Stream:         streamTimeouts(200 * time.Millisecond),
		})
		leaked := make(chan nm.Handle, n)
		go func() {
			for ev := range l.Requests() {
				if ev.Err != nil {
					continue
				}
				ev.Handle.Send(asReply(ev.Data)[0])
				leaked <- ev.Handle // never detached
			}
		}()
		c := k.dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: nmtest.Timeout})
		for i := range n {
			if err := c.Send(queryID(t, "leak.example", uint16(i))); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[uint16]bool{}
		for range n {
			ev := nmtest.NextErr(t, c.Read(), nil)
			seen[dnsmsg.ID(ev.Data)] = true
		}
		if len(seen) != n {
			t.Errorf("%d distinct replies; want %d", len(seen), n)
		}
		// Nothing in flight any more: the idle timeout ends the connection.
		if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err == nil {
			t.Errorf("read %x; want the connection's end", ev.Data)
		}
		deadline := time.Now().Add(nmtest.Timeout)
		for m.Stats().Of(k.stat).Expired < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling a counter, bounded above
		}
		if got := m.Stats().Of(k.stat).Expired; got != n {
			t.Errorf("%d requests counted expired; want %d", got, n)
		}
		// The leaked handles stay valid for their holder, and release
		// without harm.
		for range n {
			h := <-leaked
			if core.Handle(h).Refs() != 1 {
				t.Errorf("a leaked handle has %d refs; want 1", core.Handle(h).Refs())
			}
			h.Detach()
		}
		l.Close()
	})
}

// streamTimeouts gives server connections the idle timeout d.
func streamTimeouts(d time.Duration) (c stream.Config) {
	c.Timeouts.Idle = d
	return c
}

// Replies to requests that wait together for their consumer leave
// together: one consumer answering 64 pipelined requests in turn makes a
// few writes, not 64.
func TestStreamRepliesBatched(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		const n = 64
		m := nmtest.Manager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{MaxInFlight: n})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: nmtest.Timeout})
		for i := range n {
			if err := c.Send(queryID(t, "batch.example", uint16(i))); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(nmtest.Timeout)
		for m.Stats().Of(k.stat).Received < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling a counter, bounded above
		}
		before := m.Stats().Of(k.stat).Writes
		for range n {
			ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
			if err := ev.Handle.Send(asReply(ev.Data)[0]); err != nil {
				t.Fatal(err)
			}
			ev.Handle.Detach()
		}
		for range n {
			nmtest.NextErr(t, c.Read(), nil)
		}
		st := m.Stats().Of(k.stat)
		if writes := st.Writes - before; writes > n/2 {
			t.Errorf("%d replies in %d writes; want at most %d", n, writes, n/2)
		}
	})
}

// A DoH request delivered and left unanswered past the request timeout
// has its stream reset and its place given back, counted; a late reply
// fails with nm.ErrClosed.
func TestDoHLeakedRequestExpires(t *testing.T) {
	m := nmtest.Manager(t, 1)
	l := hkinds[1].listen(t, m, dnsmsg.HTTPConfig{RequestTimeout: 50 * time.Millisecond})
	c := hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: nmtest.Timeout})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exchange(context.Background(), query("leak.example"))
		errc <- err
	}()
	ev := nmtest.Next(t, requests(l), nmtest.Timeout) // never answered
	if err := <-errc; err == nil {
		t.Fatal("the query left unanswered got a reply")
	}
	if got := m.Stats().Of(nm.HTTP).Expired; got != 1 {
		t.Errorf("Expired = %d; want 1", got)
	}
	if err := ev.Handle.Send(asReply(ev.Data)[0]); !errors.Is(err, nm.ErrClosed) {
		t.Errorf("late reply: %v; want nm.ErrClosed", err)
	}
	ev.Handle.Detach()
	l.Close()
}
