package dnsmsg_test

import (
	"context"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// endpointOf finds the endpoint of role and name, or fails the test.
func endpointOf(t *testing.T, m *nm.Manager, tr nm.Transport, role, name string) nm.Endpoint {
	t.Helper()
	for _, e := range m.Endpoints() {
		if e.Transport == tr && e.Role == role && e.Name == name {
			return e
		}
	}
	t.Fatalf("no %s %s endpoint %q in %+v", tr, role, name, m.Endpoints())
	return nm.Endpoint{}
}

// Every listener and every Client upstream counts on its own, under the
// name its configuration gives, with the latency of each reply; closing
// them takes their endpoints away but not their counts from the
// manager's totals.
func TestEndpointsPerListenerAndClient(t *testing.T) {
	const n = 7
	m := newManager(t, 2)
	ctx := context.Background()
	udp, err := dnsmsg.ListenUDP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := dnsmsg.ListenTCP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	dot, err := dnsmsg.ListenTLS(ctx, m, "127.0.0.1:0", serverTLS, dnsmsg.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	doh, err := dnsmsg.ListenHTTPS(ctx, m, "127.0.0.1:0", serverTLS, nil, dnsmsg.HTTPConfig{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	doq := listenQUIC(t, m, dnsmsg.ServerConfig{Name: "quic"})
	waits := []func(){}
	for _, ch := range []<-chan nm.Event{udp.Requests(), tcp.Requests(), dot.Requests(), requests(doh), doq.Requests()} {
		w := echoServerOn(t, ch)
		waits = append(waits, w)
	}

	c := testClient(t, m, dnsmsg.ClientConfig{Name: "fwd"})
	uris := []string{"udp://" + udp.Addr().String(), "tcp://" + tcp.Addr().String(), "tls://" + dot.Addr().String(), dohURI(doh)}
	for _, u := range uris {
		for i := range n {
			if _, err := c.Exchange(ctx, u, query("q.example.")); err != nil {
				t.Fatalf("%s query %d: %v", u, i, err)
			}
		}
	}
	qc, err := dnsmsg.DialQUIC(ctx, m, doq.Addr().String(), doqClientTLS(), dnsmsg.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := qc.Exchange(ctx, query("q.example.")); err != nil {
			t.Fatal(err)
		}
	}
	qc.Close()

	for _, w := range []struct {
		tr   nm.Transport
		name string
		l    interface{ Stats() nm.Totals }
	}{
		{nm.UDP, "auth", udp}, {nm.TCP, "auth", tcp}, {nm.TLS, dot.Addr().String(), dot},
		{nm.HTTP, "web", doh}, {nm.QUIC, "quic", doq},
	} {
		e := endpointOf(t, m, w.tr, "listener", w.name)
		if e.Received != n || e.Sent != n {
			t.Errorf("%s listener %q: received %d, sent %d; want %d each", w.tr, w.name, e.Received, e.Sent, n)
		}
		if got := e.Latency.Count(); got != n {
			t.Errorf("%s listener %q: %d latencies; want %d", w.tr, w.name, got, n)
		}
		// The two views agree once the listener is quiet: a connection
		// whose client just closed may still be ending (DoQ), so they are
		// read again, within a bound, until they do.
		for deadline := time.Now().Add(nmtest.Timeout); ; {
			st, e2 := w.l.Stats(), endpointOf(t, m, w.tr, "listener", w.name)
			if st == e2.Totals {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s listener %q: Stats %+v; Endpoints %+v", w.tr, w.name, st, e2.Totals)
				break
			}
			time.Sleep(time.Millisecond) // polling two counters, bounded by the deadline
		}
		if e.Active < 1 {
			t.Errorf("%s listener %q has %d sockets open; want its own", w.tr, w.name, e.Active)
		}
		if w.tr != nm.UDP && e.Accepted < 1 {
			t.Errorf("%s listener %q accepted %d connections; want its client's", w.tr, w.name, e.Accepted)
		}
	}
	for _, tr := range []nm.Transport{nm.UDP, nm.TCP, nm.TLS, nm.HTTP} {
		e := endpointOf(t, m, tr, "client", "fwd")
		if e.Sent != n || e.Received != n || e.Latency.Count() != n {
			t.Errorf("%s client upstream %s: sent %d, received %d, %d latencies; want %d each", tr, e.Addr, e.Sent, e.Received, e.Latency.Count(), n)
		}
		if got := m.Latency(tr, "client").Count(); got != n {
			t.Errorf("%s client latencies %d; want %d", tr, got, n)
		}
	}
	if e := endpointOf(t, m, nm.QUIC, "listener", "quic"); e.Latency.Sum <= 0 {
		t.Errorf("latency sum %v; want > 0", e.Latency.Sum)
	}

	before := m.Stats()
	c.Close()
	for _, l := range []interface{ Close() error }{udp, tcp, dot, doh, doq} {
		l.Close()
	}
	for _, w := range waits {
		w()
	}
	if es := m.Endpoints(); len(es) != 0 {
		t.Errorf("endpoints after Close: %+v", es)
	}
	after := m.Stats()
	for _, tr := range nm.Transports() {
		if b, a := before.Of(tr), after.Of(tr); a.Received < b.Received || a.Sent < b.Sent {
			t.Errorf("%s totals went down after Close: %+v, then %+v", tr, b, a)
		}
		if got := m.Latency(tr, "listener").Count(); got != n {
			t.Errorf("%s listener latencies after Close: %d; want %d", tr, got, n)
		}
	}
}

// echoServerOn answers every request of ch with itself as a reply until
// ch ends; the function it returns waits for that.
func echoServerOn(t *testing.T, ch <-chan nm.Event) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			if ev.Err != nil {
				continue
			}
			ev.Handle.Send(asReply(ev.Data)[0])
			ev.Handle.Detach()
		}
	}()
	return func() { <-done }
}
