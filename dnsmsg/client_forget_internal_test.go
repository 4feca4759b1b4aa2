package dnsmsg

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/nm"
)

// udpEcho answers every DNS query on a loopback UDP socket with itself,
// QR set, until the test ends; hold, if not nil, must yield before each
// answer.
func udpEcho(t *testing.T, hold <-chan struct{}) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if hold != nil {
				if _, ok := <-hold; !ok {
					return
				}
			}
			SetResponse(buf[:n])
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestClientForgetsUnusedUpstreams: a Client that is asked to reach ever
// new upstreams keeps only those in use or recently used, each with its
// statistics, once it knows more than keptUpstreams; one with a query in
// flight is never forgotten.
func TestClientForgetsUnusedUpstreams(t *testing.T) {
	defer func(d time.Duration) { upstreamIdle = d }(upstreamIdle)
	upstreamIdle = 0 // every unused upstream may go
	m, err := nm.New(nm.Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := NewClient(m, ClientConfig{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	hold := make(chan struct{})
	defer close(hold)
	busy := "udp://" + udpEcho(t, hold)
	inFlight := make(chan error, 1)
	go func() {
		_, err := c.Exchange(ctx, busy, question("busy.example.", dns.TypeA))
		inFlight <- err
	}()
	for range 3 * keptUpstreams {
		up := "udp://" + udpEcho(t, nil)
		q := question(fmt.Sprintf("q%d.example.", len(up)), dns.TypeA)
		if _, err := c.Exchange(ctx, up, q); err != nil {
			t.Fatalf("Exchange with %s: %v", up, err)
		}
	}
	c.mu.Lock()
	known := len(c.upstreams)
	_, kept := c.upstreams[busy]
	c.mu.Unlock()
	if known > keptUpstreams {
		t.Errorf("the Client knows %d upstreams after %d were used in turn; want at most %d", known, 3*keptUpstreams+1, keptUpstreams)
	}
	if !kept {
		t.Error("the upstream with a query in flight was forgotten")
	}
	clients := 0
	for _, e := range m.Endpoints() {
		if e.Role == "client" {
			clients++
		}
	}
	if clients != 2*known { // a UDP upstream's, and its TCP connections'
		t.Errorf("%d client endpoints listed; want two per upstream known (%d)", clients, known)
	}
	hold <- struct{}{}
	if err := <-inFlight; err != nil {
		t.Errorf("the query in flight: %v", err)
	}
}

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return q
}
