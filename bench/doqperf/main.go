// Command doqperf loads a DNS over QUIC server (RFC 9250): -c connections,
// each keeping -q queries in flight (one stream each), for -d seconds; it
// prints the queries answered per second, the queries lost (not answered
// within -t, or reset) and latency percentiles. Queries are read from -f
// ("name type" per line, as dnsperf reads them) and sent in turn.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

type options struct {
	server   string
	conns    int
	inFlight int
	duration time.Duration
	timeout  time.Duration
	file     string
}

func main() {
	var o options
	flag.StringVar(&o.server, "s", "127.0.0.1:8853", "server `address`")
	flag.IntVar(&o.conns, "c", 4, "connections")
	flag.IntVar(&o.inFlight, "q", 32, "queries (streams) in flight per connection")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "`duration` of the load")
	flag.DurationVar(&o.timeout, "t", 5*time.Second, "a query not answered within this `timeout` is lost")
	flag.StringVar(&o.file, "f", "testdata/queries.txt", "queries `file`: name and type per line")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "doqperf:", err)
		os.Exit(1)
	}
}

// result is what one connection's workers measured.
type result struct {
	mu        sync.Mutex
	latencies []time.Duration // guarded by mu
	answered  atomic.Int64
	lost      atomic.Int64
}

func run(o options) error {
	queries, err := loadQueries(o.file)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"doq"}}
	var conns []*quic.Conn
	for range o.conns {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		qc, err := quic.DialAddr(dctx, o.server, tc, &quic.Config{MaxIdleTimeout: 30 * time.Second})
		dcancel()
		if err != nil {
			return err
		}
		defer qc.CloseWithError(0, "")
		conns = append(conns, qc)
	}
	var r result
	var next atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	for _, qc := range conns {
		for range o.inFlight {
			wg.Go(func() { worker(ctx, qc, queries, &next, o.timeout, &r) })
		}
	}
	wg.Wait()
	report(&r, time.Since(start), o)
	return nil
}

// worker sends queries on qc one stream at a time until ctx ends.
func worker(ctx context.Context, qc *quic.Conn, queries [][]byte, next *atomic.Uint64, timeout time.Duration, r *result) {
	var lat []time.Duration
	buf := make([]byte, 0, 4096)
	for ctx.Err() == nil {
		q := queries[next.Add(1)%uint64(len(queries))]
		t0 := time.Now()
		var err error
		buf, err = exchange(ctx, qc, q, buf, timeout)
		switch {
		case err == nil:
			lat = append(lat, time.Since(t0))
			r.answered.Add(1)
		case ctx.Err() != nil:
			// the load ended during this query: not counted
		default:
			r.lost.Add(1)
			if qc.Context().Err() != nil { // the connection is gone
				r.mu.Lock()
				r.latencies = append(r.latencies, lat...)
				r.mu.Unlock()
				return
			}
		}
	}
	r.mu.Lock()
	r.latencies = append(r.latencies, lat...)
	r.mu.Unlock()
}

// exchange runs one query on a stream of its own.
func exchange(ctx context.Context, qc *quic.Conn, q, buf []byte, timeout time.Duration) ([]byte, error) {
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return buf, err
	}
	str.SetDeadline(time.Now().Add(timeout))
	if _, err := str.Write(q); err != nil {
		str.CancelRead(3)
		return buf, err
	}
	str.Close()
	var p [2]byte
	if _, err := io.ReadFull(str, p[:]); err != nil {
		str.CancelRead(3)
		return buf, err
	}
	n := int(binary.BigEndian.Uint16(p[:]))
	buf = slices.Grow(buf[:0], n)[:n]
	if _, err := io.ReadFull(str, buf); err != nil {
		str.CancelRead(3)
		return buf, err
	}
	if n < 12 || buf[0] != 0 || buf[1] != 0 {
		return buf, errors.New("bad reply")
	}
	return buf, nil
}

// loadQueries reads "name type" lines into framed DoQ queries (ID 0,
// EDNS(0) as dnsperf sends them).
func loadQueries(file string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(fields[0]), dns.StringToType[strings.ToUpper(fields[1])])
		m.Id = 0
		m.SetEdns0(1232, false)
		b, err := m.Pack()
		if err != nil {
			return nil, err
		}
		out = append(out, append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no queries in %s", file)
	}
	return out, sc.Err()
}

func report(r *result, elapsed time.Duration, o options) {
	lat := r.latencies
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("doqperf: %d connections x %d in flight, %.1f s\n", o.conns, o.inFlight, elapsed.Seconds())
	fmt.Printf("  Queries completed: %d\n", r.answered.Load())
	fmt.Printf("  Queries lost:      %d\n", r.lost.Load())
	fmt.Printf("  Queries per second: %.0f\n", float64(r.answered.Load())/elapsed.Seconds())
	fmt.Printf("  Latency p50 %v, p99 %v, max %v\n", pct(0.50), pct(0.99), pct(1))
}
