package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/echo"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup starts nmecho as the upstream and a forwarder to it over kind
// (dot or doh), and returns the forwarder's UDP URI.
func setup(tb testing.TB, kind string) string {
	tb.Helper()
	up, err := echo.Start(context.Background(), echo.Options{DoT: "127.0.0.1:0", DoH: "127.0.0.1:0", Workers: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(up.Close)
	a, _ := up.Addr(kind)
	uri := "tls://" + a.String()
	if kind == "doh" {
		uri = "https://" + a.String() + dnsmsg.DefaultPath
	}
	m := nmtest.Manager(tb, 1)
	f, err := start(context.Background(), m, options{listen: "127.0.0.1:0", upstream: uri, insecure: true, workers: 512})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := f.close(); err != nil {
			tb.Errorf("Serve = %v", err)
		}
	})
	return "udp://" + f.l.Addr().String()
}

// TestForward: queries over UDP come back through the DoT and DoH
// upstream, echoed, with their own IDs.
func TestForward(t *testing.T) {
	for _, kind := range []string{"dot", "doh"} {
		t.Run(kind, func(t *testing.T) {
			uri := setup(t, kind)
			m := nmtest.Manager(t, 1)
			c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{})
			defer c.Close()
			for i := range 20 {
				q := new(dns.Msg).SetQuestion(fmt.Sprintf("f%d.example.", i), dns.TypeA)
				ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
				r, err := c.Exchange(ctx, uri, q)
				cancel()
				if err != nil || r.Id != q.Id || r.Question[0].Name != q.Question[0].Name {
					t.Fatalf("forwarded %s: %v, %v", q.Question[0].Name, r, err)
				}
			}
		})
	}
}

// BenchmarkForward forwards UDP queries over DoT and DoH to nmecho, all in
// this process; qps counts the whole loop (load, forwarder, upstream) on
// the CPUs the process has, allocs too.
func BenchmarkForward(b *testing.B) {
	for _, kind := range []string{"dot", "doh"} {
		b.Run(kind, func(b *testing.B) {
			uri := setup(b, kind)
			m, err := nm.New(nm.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{})
			defer c.Close()
			q, _ := new(dns.Msg).SetQuestion("bench.example.", dns.TypeA).Pack()
			b.ReportAllocs()
			b.SetParallelism(32)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.ExchangeWire(context.Background(), uri, q); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "qps")
		})
	}
}
