package dnsmsg_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

func newManager(t testing.TB, workers int) *nm.Manager { return nmtest.Manager(t, workers) }

// echoServer answers each request on l with reply (see nmtest.Serve).
func echoServer(t testing.TB, l *dnsmsg.Listener, reply func(req []byte) [][]byte) func() nmtest.Result {
	return nmtest.Serve(t, l.Requests(), reply)
}

func asReply(req []byte) [][]byte {
	b := append([]byte(nil), req...)
	dnsmsg.SetResponse(b)
	return [][]byte{b}
}

func query(name string) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	return q
}

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func listenUDP(t testing.TB, m *nm.Manager) *dnsmsg.Listener {
	t.Helper()
	l, err := dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestUDPExchangeWithMiekgClient(t *testing.T) {
	m := newManager(t, 2)
	l := listenUDP(t, m)
	wait := echoServer(t, l, asReply)
	c := new(dns.Client)
	for i := 0; i < 5; i++ {
		q := query("example.org")
		r, _, err := c.Exchange(q, l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != q.Id || !r.Response || r.Question[0].Name != "example.org." {
			t.Errorf("reply %v; want the query echoed with QR", r)
		}
	}
	l.Close()
	if r := wait(); len(r.Data) != 5 || !errors.Is(r.Final, nm.ErrCanceled) {
		t.Errorf("server saw %d requests, final %v; want 5, ErrCanceled", len(r.Data), r.Final)
	}
}

func TestUDPClientAgainstMiekgServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			a := new(dns.Msg)
			a.SetReply(r)
			a.Answer = append(a.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
			w.WriteMsg(a)
		})}
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()

	m := newManager(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
	defer cancel()
	r, err := dnsmsg.Exchange(ctx, m, pc.LocalAddr().String(), query("example.net"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Errorf("answer %v; want 192.0.2.1", r.Answer)
	}
}

func TestUDPServerDropsNonRequests(t *testing.T) {
	m := newManager(t, 1)
	l := listenUDP(t, m)
	wait := echoServer(t, l, asReply)
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := pack(t, query("x"))
	dnsmsg.SetResponse(resp)
	random := make([]byte, 512)
	r := rand.New(rand.NewPCG(3, 5))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	random[2] &^= 0x80 // a "query": only its impossible counts give it away
	junk := [][]byte{{}, {0}, make([]byte, dnsmsg.HeaderLen-1), resp, random}
	for _, b := range junk {
		c.Write(b)
	}
	good := pack(t, query("good"))
	c.Write(good)
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	n, err := c.Read(buf)
	if err != nil || dnsmsg.ID(buf[:n]) != dnsmsg.ID(good) {
		t.Fatalf("first answer %x, %v; want the answer to the good query", buf[:n], err)
	}
	l.Close()
	if r := wait(); len(r.Data) != 1 {
		t.Errorf("delivered %d requests; want 1", len(r.Data))
	}
	if st := m.Stats().Of(nm.UDP); st.Dropped != int64(len(junk)) || st.Received != int64(len(junk)+1) {
		t.Errorf("stats %+v; want %d received, %d dropped", st, len(junk)+1, len(junk))
	}
}

func TestUDPClientDiscardsWrongID(t *testing.T) {
	m := newManager(t, 1)
	l := listenUDP(t, m)
	// The server first answers with a wrong ID, then with the right one.
	wait := echoServer(t, l, func(req []byte) [][]byte {
		bad := asReply(req)[0]
		bad[0] ^= 0xff
		return [][]byte{bad, asReply(req)[0]}
	})
	c, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	q := pack(t, query("id.test"))
	if err := c.Send(q); err != nil {
		t.Fatal(err)
	}
	events := c.Read()
	ev := nmtest.NextErr(t, events, nil)
	if dnsmsg.ID(ev.Data) != dnsmsg.ID(q) {
		t.Errorf("reply ID %d; want %d", dnsmsg.ID(ev.Data), dnsmsg.ID(q))
	}
	c.Close() // no read armed: the channel gets ErrShuttingDown
	nmtest.ExpectFinal(t, events, 0, nm.ErrShuttingDown)
	l.Close()
	wait()
	if st := m.Stats().Of(nm.UDP); st.Dropped != 1 {
		t.Errorf("dropped %d; want the 1 wrong-ID reply", st.Dropped)
	}
}

func TestUDPExchangeTimeoutAndContext(t *testing.T) {
	m := newManager(t, 1)
	l := listenUDP(t, m)
	wait := echoServer(t, l, func([]byte) [][]byte { return nil })
	c, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{ReadTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exchange(context.Background(), query("slow")); !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("Exchange: %v; want ErrTimedOut", err)
	}
	c.SetReadTimeout(nm.NoTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, query("canceled"))
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Exchange: %v; want context.Canceled", err)
	}
	events := c.Handle().Read()
	c.ReadStop()
	c.Close() // no read armed: the channel gets ErrShuttingDown
	nmtest.ExpectFinal(t, events, 0, nm.ErrShuttingDown)
	l.Close()
	wait()
}

func TestUDPManyClientsEveryShard(t *testing.T) {
	const workers, n = 2, 100
	m := newManager(t, workers)
	l := listenUDP(t, m)
	wait := echoServer(t, l, asReply)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		c, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer c.Close()
			for j := 0; j < n; j++ {
				q := query("many.test")
				r, err := c.Exchange(context.Background(), q)
				if err != nil || r.Id != q.Id {
					t.Errorf("Exchange: %v, %v", r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	if r := wait(); len(r.Data) != workers*n {
		t.Errorf("server saw %d; want %d", len(r.Data), workers*n)
	}
	st := m.Stats().Of(nm.UDP)
	if st.Received != 2*workers*n || st.Sent != 2*workers*n || st.Dropped != 0 {
		t.Errorf("stats %+v; want %d received and sent, none dropped", st, 2*workers*n)
	}
}
