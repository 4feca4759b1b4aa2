package dnsmsg_test

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

func dialQUIC(t testing.TB, m *nm.Manager, l *dnsmsg.Listener) *dnsmsg.Conn {
	t.Helper()
	c, err := dnsmsg.DialQUIC(context.Background(), m, l.Addr().String(), clientTLS, dnsmsg.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Serve with a Handler answers DoQ requests; the client's queries keep
// their IDs for the caller while the wire carries 0, many at once.
func TestDoQServeAndClient(t *testing.T) {
	m := newManager(t, 2)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	var sawQUIC, sawID0 sync.Once
	quicOK, id0 := false, false
	served := make(chan error, 1)
	go func() {
		served <- dnsmsg.Serve(context.Background(), l.Requests(), dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			if r.Transport() == nm.QUIC {
				sawQUIC.Do(func() { quicOK = true })
			}
			if dnsmsg.ID(r.Wire()) == 0 {
				sawID0.Do(func() { id0 = true })
			}
			q, err := r.Msg()
			if err != nil {
				return
			}
			a := new(dns.Msg)
			a.SetReply(q)
			r.Reply(a)
		}), dnsmsg.ServeConfig{})
	}()
	c := dialQUIC(t, m, l)
	const n = 10
	for i := range n { // pipelined: n queries in flight, on n streams
		q := query("client.example.")
		q.Id = uint16(1000 + i)
		if err := c.Send(pack(t, q)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]bool{}
	for range n {
		ev := nmtest.Next(t, c.Read(), doqBound)
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		if id := dnsmsg.ID(ev.Data); id < 1000 || id >= 1000+n || seen[id] || !dnsmsg.IsResponse(ev.Data) {
			t.Errorf("reply ID %d (seen before: %v); want a new response among the queries' IDs", id, seen[id])
		} else {
			seen[id] = true
		}
	}
	q := query("exchange.example.")
	if r, err := c.Exchange(context.Background(), q); err != nil || r.Id != q.Id {
		t.Errorf("Exchange = %v, %v; want the reply with ID %d", r, err, q.Id)
	}
	l.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if !quicOK || !id0 {
		t.Errorf("handler saw transport QUIC %v, ID 0 %v; want both", quicOK, id0)
	}
}

// Exchange gives up when its context ends; the Conn goes on.
func TestDoQClientExchangeContext(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	c := dialQUIC(t, m, l)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, query("unanswered.example."))
		errc <- err
	}()
	ev := nmtest.Next(t, l.Requests(), doqBound) // the query is on the wire
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Exchange = %v; want context.Canceled", err)
	}
	ev.Handle.Detach()

	wait := echoServer(t, l, asReply)
	q := query("answered.example.")
	r, err := c.Exchange(context.Background(), q)
	if err != nil || r.Id != q.Id {
		t.Errorf("Exchange after a cancelled one = %v, %v; want the reply", r, err)
	}
	l.Close()
	wait()
}

// A query the server resets ends its Read with a *RequestError.
func TestDoQClientStreamReset(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	c := dialQUIC(t, m, l)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exchange(context.Background(), query("reset.example."))
		errc <- err
	}()
	nmtest.Next(t, l.Requests(), doqBound).Handle.Detach() // unanswered: reset
	var re *dnsmsg.RequestError
	if err := <-errc; !errors.As(err, &re) {
		t.Errorf("Exchange = %v; want a *RequestError", err)
	}
	closeAndDrain(t, l)
}

// A resumed client whose 0-RTT data the server rejects (a session from
// another server) sends its queries again after the handshake.
func TestDoQClient0RTTRejected(t *testing.T) {
	skipUnderRace(t)
	m := newManager(t, 1)
	cfg := dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{Allow0RTT: true}}
	tc := clientTLS.Clone()
	tc.ClientSessionCache = tls.NewLRUClientSessionCache(4) // keyed by ServerName: shared by both servers
	for i := range 2 {
		l := listenQUIC(t, m, cfg)
		wait := echoServer(t, l, asReply)
		c, err := dnsmsg.DialQUIC(context.Background(), m, l.Addr().String(), tc, dnsmsg.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		q := query("resumed.example.")
		if r, err := c.Exchange(context.Background(), q); err != nil || r.Id != q.Id {
			t.Errorf("server %d: Exchange = %v, %v; want the reply", i, r, err)
		}
		c.Close()
		l.Close()
		wait()
	}
}

// A client's cancellation of its stream (STOP_SENDING) ends the request's
// Context, so that a handler stops working for nobody.
func TestDoQCancelEndsRequestContext(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	started, ended := make(chan struct{}), make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- dnsmsg.Serve(context.Background(), l.Requests(), dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
			close(started)
			<-r.Context().Done()
			close(ended)
		}), dnsmsg.ServeConfig{Workers: 1})
	}()
	qc := dialRaw(t, l, nil)
	str := openWrite(t, qc, frame(doqQuery("cancelled.example.")), true)
	<-started
	str.CancelRead(quic.StreamErrorCode(dnsmsg.DoQRequestCancelled))
	select {
	case <-ended:
	case <-time.After(doqBound):
		t.Fatal("the request's Context did not end after the client's STOP_SENDING")
	}
	l.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
