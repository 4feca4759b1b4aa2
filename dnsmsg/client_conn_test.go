package dnsmsg_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestConnConcurrentExchange: 20 concurrent Exchange calls on one Conn,
// with a 1 s read timeout, all get their own reply on every transport.
func TestConnConcurrentExchange(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 2)
		s := serveKind(t, m, kind, nameHandler)
		cfg := dnsmsg.ClientConfig{ReadTimeout: time.Second}
		var c *dnsmsg.Conn
		if kind == "doh" {
			var err error
			c, err = dnsmsg.DialHTTPS(context.Background(), m, s.addr, clientTLS, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		} else {
			c = dialKind(t, m, kind, s.addr)
			c.SetReadTimeout(time.Second)
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				q := question(fmt.Sprintf("c%d.example.", i), dns.TypeTXT)
				r, err := c.Exchange(longCtx(t), q)
				if err != nil {
					t.Errorf("Exchange %d = %v", i, err)
					return
				}
				checkReply(t, q, r)
			})
		}
		wg.Wait()
	})
}

// closingH2 is a DoH upstream that completes TLS with ALPN h2, reads a
// little (the client's preface, and its query if sent) and closes.
func closingH2(t *testing.T) string {
	conf := serverTLS.Clone()
	conf.NextProtos = []string{"h2"}
	f := fakeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, conf)
		if tc.Handshake() != nil {
			return
		}
		buf := make([]byte, 24) // the client preface
		io.ReadFull(tc, buf)
		tc.Close()
	})
	return "https://" + f.addr + dnsmsg.DefaultPath
}

// TestDoHConnFinalEvents: when a DoH server closes the connection, idle
// or with a query in flight, the armed read gets a final event, and every
// error event matches a sentinel of nm.
func TestDoHConnFinalEvents(t *testing.T) {
	for _, query := range []bool{false, true} {
		t.Run(fmt.Sprintf("query=%v", query), func(t *testing.T) {
			m := nmtest.Manager(t, 1)
			c, err := dnsmsg.DialHTTPS(context.Background(), m, closingH2(t), clientTLS, dnsmsg.ClientConfig{ReadTimeout: nm.NoTimeout})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if query {
				q := question("a.example.", dns.TypeA)
				b, _ := q.Pack()
				c.Send(b)
			}
			for range 3 {
				ev := nmtest.Next(t, c.Read(), nmtest.Timeout)
				sentinel := errors.Is(ev.Err, nm.ErrEOF) || errors.Is(ev.Err, nm.ErrConnReset)
				var re *dnsmsg.RequestError
				if errors.As(ev.Err, &re) && sentinel {
					continue // the query's own failure; the final event follows
				}
				if !sentinel {
					t.Fatalf("event %v; want nm.ErrEOF or nm.ErrConnReset", ev.Err)
				}
				nmtest.Closed(t, c.Read(), nmtest.Timeout)
				return
			}
			t.Fatal("no final event")
		})
	}
}

// TestDoHConnExchangeWaitsWithCtx: a DoH Conn's Exchange waiting for an
// in-flight place returns with its context.
func TestDoHConnExchangeWaitsWithCtx(t *testing.T) {
	m := nmtest.Manager(t, 1)
	got := make(chan struct{}, 1)
	uri := fakeDoH(t, func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done()
	})
	c, err := dnsmsg.DialHTTPS(context.Background(), m, uri, clientTLS, dnsmsg.ClientConfig{MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := question("first.example.", dns.TypeA).Pack()
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	<-got
	_, err = c.Exchange(shortCtx(t), question("second.example.", dns.TypeA))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exchange = %v; want context.DeadlineExceeded", err)
	}
}
