package dnsmsg_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

func TestStreamExchangeWithMiekgClient(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		c := &dns.Client{Net: k.miekgNet(), TLSConfig: clientTLS}
		conn, err := c.Dial(l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			q := query("example.org")
			r, _, err := c.ExchangeWithConn(q, conn)
			if err != nil {
				t.Fatal(err)
			}
			if r.Id != q.Id || !r.Response || r.Question[0].Name != "example.org." {
				t.Errorf("reply %v; want the query echoed with QR", r)
			}
		}
		if k.stat == nm.TLS {
			if p := conn.Conn.(interface {
				ConnectionState() tls.ConnectionState
			}).ConnectionState().NegotiatedProtocol; p != "" && p != "dot" {
				t.Errorf("ALPN %q", p)
			}
		}
		conn.Close()
		l.Close()
		if r := wait(); len(r.Data) != 5 || !errors.Is(r.Final, nm.ErrCanceled) {
			t.Errorf("server saw %d requests, final %v; want 5, ErrCanceled", len(r.Data), r.Final)
		}
	})
}

func TestStreamClientAgainstMiekgServer(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if k.stat == nm.TLS {
			ln = tls.NewListener(ln, serverTLS)
		}
		srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			r := new(dns.Msg)
			r.SetReply(q)
			w.WriteMsg(r)
		})}
		go srv.ActivateAndServe()
		defer srv.Shutdown()

		m := newManager(t, 1)
		c, err := k.dialErr(m, ln.Addr().String(), dnsmsg.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < 3; i++ {
			q := query("example.net")
			r, err := c.Exchange(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if r.Id != q.Id || !r.Response {
				t.Errorf("reply %v to %d", r, q.Id)
			}
		}
	})
}

// TestStreamNoTraffic: a client that connects and sends nothing is closed
// at the initial timeout; no request is delivered.
func TestStreamNoTraffic(t *testing.T) {
	forStreamsAndQuota(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		var cfg dnsmsg.ServerConfig
		cfg.Stream.Timeouts.Initial = 50 * time.Millisecond
		l := k.listen(t, m, cfg)
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		nmtest.NextErr(t, c.Read(), nm.ErrEOF)
		c.Close()
		l.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
		if st := m.Stats().Of(k.stat); st.Accepted != 1 {
			t.Errorf("accepted %d connections; want 1", st.Accepted)
		}
	})
}

func TestStreamNoResponseTimesOutAndRecovers(t *testing.T) {
	forStreamsAndQuota(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: 30 * time.Millisecond})
		timeoutRecovery(t, c, l.Requests())
	})
}

func TestStreamShutdownBeforeConnect(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		addr := l.Addr().String()
		m.Close()
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
		if _, err := k.dialErr(m, addr, dnsmsg.ClientConfig{}); !errors.Is(err, nm.ErrShuttingDown) {
			t.Errorf("dial after shutdown: %v; want ErrShuttingDown", err)
		}
	})
}

func TestStreamShutdownDuringRead(t *testing.T) {
	forStreamsAndQuota(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{ReadTimeout: -1})
		if err := c.Send(queryID(t, "a.example", 1)); err != nil {
			t.Fatal(err)
		}
		req := nmtest.Next(t, l.Requests(), nmtest.Timeout)
		reads := c.Read()
		m.Close()
		nmtest.ExpectFinal(t, reads, 0, nm.ErrCanceled)
		nmtest.ExpectFinal(t, l.Requests(), 0, nm.ErrCanceled)
		// The request outlived its connection: replying fails, cleanly.
		if err := req.Handle.Send(asReply(req.Data)[0]); err == nil {
			t.Error("a reply after shutdown succeeded")
		}
		req.Handle.Detach()
	})
}

func TestStreamOneAndTwoClients(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		for clients := 1; clients <= 2; clients++ {
			var wg sync.WaitGroup
			for i := 0; i < clients; i++ {
				c := k.dial(t, m, l, dnsmsg.ClientConfig{})
				wg.Go(func() {
					defer c.Close()
					for j := 0; j < 10; j++ {
						q := query("two.example")
						r, err := c.Exchange(context.Background(), q)
						if err != nil || r.Id != q.Id {
							t.Errorf("exchange: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
		l.Close()
		if r := wait(); len(r.Data) != 30 {
			t.Errorf("server saw %d requests; want 30", len(r.Data))
		}
	})
}

func TestStreamEveryShardHundredQueries(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const workers, perConn = 4, 100
		m := newManager(t, workers)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := nmtest.Serve(t, l.Requests(), asReply)
		var wg sync.WaitGroup
		for i := 0; i < workers; i++ {
			c := k.dial(t, m, l, dnsmsg.ClientConfig{})
			if got := core.Handle(c.Handle()).Shard().ID(); got != i {
				t.Errorf("client %d on shard %d", i, got)
			}
			wg.Go(func() { pipeline(t, c, perConn) })
		}
		wg.Wait()
		l.Close()
		if r := wait(); len(r.Data) != workers*perConn {
			t.Errorf("server saw %d requests; want %d", len(r.Data), workers*perConn)
		}
		for i := 0; i < workers; i++ {
			if st := m.ShardStats(i).Of(k.stat); st.Sent < perConn {
				t.Errorf("shard %d sent %d messages; want at least %d", i, st.Sent, perConn)
			}
		}
	})
}

func TestStreamQuotaOneSecondWaits(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		k.maxConns = 1
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		first := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if _, err := first.Exchange(context.Background(), query("one.example")); err != nil {
			t.Fatal(err)
		}
		// The second connects (the kernel's backlog) but is not served
		// while the first holds the slot.
		second := k.raw(t, l)
		replied := make(chan []byte, 1)
		go func() {
			if _, err := second.Write(frame(queryID(t, "two.example", 2))); err == nil {
				r, _ := readFrameErr(second)
				replied <- r
			}
		}()
		select {
		case <-replied:
			t.Fatal("the second connection was served at the cap")
		case <-time.After(quiet):
		}
		first.Close()
		select {
		case r := <-replied:
			if len(r) < dnsmsg.HeaderLen || dnsmsg.ID(r) != 2 {
				t.Errorf("reply %x; want the reply to 2", r)
			}
		case <-time.After(nmtest.Timeout):
			t.Fatal("the second connection was not served after the first closed")
		}
		second.Close()
		l.Close()
		wait()
	})
}

func TestStreamThousandQueriesInOneWrite(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		const n = 1000
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		c := k.raw(t, l)
		var msgs [][]byte
		for i := 0; i < n; i++ {
			msgs = append(msgs, queryID(t, "many.example", uint16(i)))
		}
		go c.Write(frame(msgs...))
		seen := make(map[uint16]bool)
		for i := 0; i < n; i++ {
			r := readFrame(t, c)
			if !dnsmsg.IsResponse(r) {
				t.Fatalf("reply %d is not a response", i)
			}
			seen[dnsmsg.ID(r)] = true
		}
		if len(seen) != n {
			t.Errorf("%d distinct replies; want %d", len(seen), n)
		}
		c.Close()
		l.Close()
		if r := wait(); len(r.Data) != n {
			t.Errorf("server saw %d requests; want %d", len(r.Data), n)
		}
	})
}

func TestStreamTwoRepliesInOneReceive(t *testing.T) {
	// A server writes two replies in one write; the client reads them with
	// two Reads, and a Read made twice before its event yields one event.
	forStreams(t, func(t *testing.T, k skind) {
		ln := k.rawListener(t)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(nmtest.Timeout))
			q1, err1 := readFrameErr(c)
			q2, err2 := readFrameErr(c)
			if err1 != nil || err2 != nil {
				return // the client sees no replies and fails
			}
			c.Write(frame(asReply(q1)[0], asReply(q2)[0]))
			c.Read(make([]byte, 1)) // until the client goes
		}()
		m := newManager(t, 1)
		c, err := k.dialErr(m, ln.Addr().String(), dnsmsg.ClientConfig{ReadTimeout: nmtest.Timeout})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Send(queryID(t, "one.example", 1))
		c.Send(queryID(t, "two.example", 2))
		first := nmtest.Next(t, c.Read(), nmtest.Timeout)
		if first.Err != nil || dnsmsg.ID(first.Data) != 1 {
			t.Fatalf("first read: %v", first.Err)
		}
		c.Read()
		ch := c.Read()
		second := nmtest.Next(t, ch, nmtest.Timeout)
		if second.Err != nil || dnsmsg.ID(second.Data) != 2 {
			t.Fatalf("second read: %v", second.Err)
		}
		select {
		case ev := <-ch:
			t.Fatalf("an event nobody read for: %v", ev.Err)
		case <-time.After(quiet):
		}
		c.SetReadTimeout(quiet)
		nmtest.NextErr(t, c.Read(), nm.ErrTimedOut)
	})
}

func TestStreamClientRepliesBeforeEOFThenEOF(t *testing.T) {
	// The server answers two queries, one with an ID never asked, and
	// closes: the client gets the reply it asked for, then ErrEOF; the
	// stray reply is dropped and counted.
	forStreams(t, func(t *testing.T, k skind) {
		ln := k.rawListener(t)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(nmtest.Timeout))
			q, err := readFrameErr(c)
			if err != nil {
				return
			}
			stray := asReply(q)[0]
			stray[0], stray[1] = 0xbe, 0xef
			c.Write(frame(stray, asReply(q)[0]))
		}()
		m := newManager(t, 1)
		c, err := k.dialErr(m, ln.Addr().String(), dnsmsg.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Send(queryID(t, "eof.example", 5))
		if ev := nmtest.Next(t, c.Read(), nmtest.Timeout); ev.Err != nil || dnsmsg.ID(ev.Data) != 5 {
			t.Fatalf("first read: %v", ev.Err)
		}
		nmtest.ExpectFinal(t, c.Read(), 0, nm.ErrEOF)
		if st := m.Stats().Of(k.stat); st.Dropped != 1 {
			t.Errorf("dropped %d; want 1 (the reply to an ID never asked)", st.Dropped)
		}
	})
}

func TestStreamListenerCloseEndsConnections(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if _, err := c.Exchange(context.Background(), query("before.example")); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if r := wait(); len(r.Data) != 1 || !errors.Is(r.Final, nm.ErrCanceled) {
			t.Errorf("server: %d requests, final %v", len(r.Data), r.Final)
		}
		nmtest.ExpectFinal(t, c.Read(), 0, nm.ErrEOF)
	})
}

func TestStreamPauseHoldsRequests(t *testing.T) {
	forServers(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		c := k.dial(t, m, l, dnsmsg.ClientConfig{})
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
		c.Send(queryID(t, "paused.example", 1))
		select {
		case ev := <-l.Requests():
			t.Fatalf("a request delivered while paused (err %v)", ev.Err)
		case <-time.After(quiet):
		}
		if err := m.Resume(); err != nil {
			t.Fatal(err)
		}
		ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
		if ev.Err != nil || dnsmsg.ID(ev.Data) != 1 {
			t.Fatalf("after Resume: %v", ev.Err)
		}
		ev.Handle.Detach()
	})
}

// TestSetReadTimeoutAppliesToTheArmedRead: a read armed with a long
// timeout times out at the shorter one set while it waits, on UDP and
// stream Conns alike.
func TestSetReadTimeoutAppliesToTheArmedRead(t *testing.T) {
	m := newManager(t, 1)
	long := dnsmsg.ClientConfig{ReadTimeout: time.Hour}
	check := func(t *testing.T, c *dnsmsg.Conn) {
		defer c.Close()
		if err := c.Send(queryID(t, "unanswered.example", 3)); err != nil {
			t.Fatal(err)
		}
		ch := c.Read()
		select {
		case ev := <-ch:
			t.Fatalf("an event before any reply or timeout: %v", ev.Err)
		case <-time.After(quiet):
		}
		c.SetReadTimeout(10 * time.Millisecond)
		nmtest.NextErr(t, ch, nm.ErrTimedOut)
	}
	t.Run("udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c, err := dnsmsg.DialUDP(context.Background(), m, pc.LocalAddr().String(), long)
		if err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
	forStreams(t, func(t *testing.T, k skind) {
		l := k.listen(t, m, dnsmsg.ServerConfig{}) // nobody answers its requests
		check(t, k.dial(t, m, l, long))
	})
}
