package dnsmsg_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

func TestDoHNoTraffic(t *testing.T) {
	forDoHAndQuota(t, func(t *testing.T, k hkind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		c.Close()
		l.Close()
		nmtest.ExpectFinal(t, requests(l), 0, nm.ErrCanceled)
		if st := m.Stats().Of(nm.HTTP); st.Accepted != 1 {
			t.Errorf("accepted %d connections; want 1", st.Accepted)
		}
		if st := m.Stats().Of(nm.HTTP); st.Received != 0 {
			t.Errorf("server received %d requests; want 0", st.Received)
		}
	})
}

func TestDoHOneRequest(t *testing.T) {
	forDoHAndQuota(t, func(t *testing.T, k hkind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		wait := nmtest.Serve(t, requests(l), asReply)
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		q := query("one.example")
		r, err := c.Exchange(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != q.Id || !r.Response || r.Question[0].Name != "one.example." {
			t.Errorf("reply %v; want the query echoed with QR", r)
		}
		l.Close()
		if r := wait(); len(r.Data) != 1 || !errors.Is(r.Final, nm.ErrCanceled) {
			t.Errorf("server saw %d requests, final %v; want 1, ErrCanceled", len(r.Data), r.Final)
		}
	})
}

func TestDoHTwoOnOneSession(t *testing.T) {
	forDoHAndQuota(t, func(t *testing.T, k hkind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		wait := nmtest.Serve(t, requests(l), asReply)
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		for _, id := range []uint16{1, 2} {
			if err := c.Send(queryID(t, "two.example", id)); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[uint16]bool{}
		for i := 0; i < 2; i++ {
			ev := nmtest.Next(t, c.Read(), nmtest.Timeout)
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			seen[dnsmsg.ID(ev.Data)] = true
		}
		if !seen[1] || !seen[2] {
			t.Errorf("replies to %v; want 1 and 2", seen)
		}
		l.Close()
		wait()
		if st := m.Stats().Of(nm.HTTP); st.Accepted != 1 {
			t.Errorf("accepted %d connections; want 1 session", st.Accepted)
		}
	})
}

func TestDoHNoResponseTimesOutAndRecovers(t *testing.T) {
	forDoHAndQuota(t, func(t *testing.T, k hkind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: 30 * time.Millisecond})
		timeoutRecovery(t, c, requests(l))
	})
}

func TestDoHThousandRequestsEveryShard(t *testing.T) {
	forDoH(t, func(t *testing.T, k hkind) {
		const workers, conns, perConn = 4, 8, 125
		m := newManager(t, workers)
		l := k.listen(t, m, dnsmsg.HTTPConfig{})
		wait := nmtest.Serve(t, requests(l), asReply)
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			c := k.dial(t, m, l, dnsmsg.ClientConfig{})
			if got := core.Handle(c.Handle()).Shard().ID(); got != i%workers {
				t.Errorf("client %d on shard %d", i, got)
			}
			wg.Go(func() { pipeline(t, c, perConn) })
		}
		wg.Wait()
		l.Close()
		if r := wait(); len(r.Data) != conns*perConn {
			t.Errorf("server saw %d requests; want %d", len(r.Data), conns*perConn)
		}
		// Client and server count on the same manager: each request once
		// received and once sent on each side.
		total := m.Stats().Of(nm.HTTP)
		if total.Received != 2*conns*perConn || total.Sent != 2*conns*perConn || total.Dropped != 0 {
			t.Errorf("HTTP stats %+v; want %d received and sent, none dropped", total, 2*conns*perConn)
		}
		if st := m.Stats().Of(nm.HTTP); st.Accepted != conns {
			t.Errorf("accepted %d connections; want %d", st.Accepted, conns)
		}
		for i := 0; i < workers; i++ {
			if st := m.ShardStats(i).Of(nm.HTTP); st.Sent < 2*perConn {
				t.Errorf("shard %d sent %d; want at least %d", i, st.Sent, 2*perConn)
			}
		}
	})
}
