package dnsmsg_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// nameHandler answers each query with a TXT record holding the query's
// name, so that a reply shows which question it answers.
var nameHandler = dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
	q, err := r.Msg()
	if err != nil {
		return
	}
	m := new(dns.Msg).SetReply(q)
	m.Answer = append(m.Answer, &dns.TXT{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{q.Question[0].Name},
	})
	r.Reply(m)
})

// clientURI returns the URI a Client names the server s of kind by.
func clientURI(kind string, s *served) string {
	switch kind {
	case "udp":
		return "udp://" + s.addr
	case "tcp":
		return "tcp://" + s.addr
	case "dot":
		return "tls://" + s.addr
	}
	return s.addr
}

func testClient(t *testing.T, m *nm.Manager, cfg dnsmsg.ClientConfig) *dnsmsg.Client {
	if cfg.TLS == nil {
		cfg.TLS = clientTLS
	}
	c := dnsmsg.NewClient(m, cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

// checkReply fails unless r answers q: q's ID and question, and the
// answer the server gave for q's name.
func checkReply(t *testing.T, q, r *dns.Msg) {
	t.Helper()
	name := q.Question[0].Name
	if r.Id != q.Id || len(r.Question) != 1 || r.Question[0].Name != name {
		t.Errorf("reply ID %d question %v; want ID %d question %s", r.Id, r.Question, q.Id, name)
		return
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != name {
		t.Errorf("reply to %s answers %v; want its own TXT", name, r.Answer)
	}
}

// TestClientConcurrent: 100 callers share one Client on each transport,
// with colliding IDs (ID 0 among them); each gets the reply to its own
// question with its own ID.
func TestClientConcurrent(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 2)
		s := serveKind(t, m, kind, nameHandler)
		c := testClient(t, m, dnsmsg.ClientConfig{MaxInFlight: 16})
		uri := clientURI(kind, s)
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
				defer cancel()
				q := question(fmt.Sprintf("q%d.example.", i), dns.TypeTXT)
				q.Id = uint16(i % 3)
				r, err := c.Exchange(ctx, uri, q)
				if err != nil {
					t.Errorf("Exchange(q%d) = %v", i, err)
					return
				}
				checkReply(t, q, r)
			})
		}
		wg.Wait()
	})
}

// TestClientBadUpstream: URIs the Client cannot use fail at once.
func TestClientBadUpstream(t *testing.T) {
	m := nmtest.Manager(t, 1)
	c := testClient(t, m, dnsmsg.ClientConfig{})
	for _, u := range []string{"ftp://127.0.0.1", "tcp://", "tls://host/path", "https://"} {
		_, err := c.Exchange(context.Background(), u, question("a.example.", dns.TypeA))
		if !errors.Is(err, dnsmsg.ErrBadURI) {
			t.Errorf("Exchange(%q) = %v; want ErrBadURI", u, err)
		}
	}
}

// TestClientEndpointCounts: a Client's upstream counts each query it sent
// and each reply it received once, on every transport.
func TestClientEndpointCounts(t *testing.T) {
	const n = 5
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 2)
		s := serveKind(t, m, kind, nameHandler)
		c := testClient(t, m, dnsmsg.ClientConfig{Name: "fwd"})
		uri := clientURI(kind, s)
		ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
		defer cancel()
		for i := range n {
			q := question(fmt.Sprintf("q%d.example.", i), dns.TypeTXT)
			r, err := c.Exchange(ctx, uri, q)
			if err != nil {
				t.Fatalf("Exchange(q%d) = %v", i, err)
			}
			checkReply(t, q, r)
		}
		var sent, received int64
		count := func() bool {
			sent, received = 0, 0
			for _, e := range m.Endpoints() {
				if e.Role == "client" && e.Name == "fwd" {
					sent += e.Sent
					received += e.Received
				}
			}
			return sent >= n
		}
		// A stream query counts as sent once its write returns, which
		// may be after its reply came back.
		waitFor(t, "the queries counted as sent", count)
		if sent != n || received != n {
			t.Errorf("client endpoints: %d sent, %d received; want %d each", sent, received, n)
		}
	})
}
