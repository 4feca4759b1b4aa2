package dig

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
)

// load sends o.N queries, o.C at a time, and prints the rate, the latency
// percentiles of the answered ones and the errors of the others.
func load(ctx context.Context, c *dnsmsg.Client, o Options, out io.Writer) error {
	q, err := o.query().Pack()
	if err != nil {
		return err
	}
	work := make(chan struct{}, o.N) // a token per query to send
	for range o.N {
		work <- struct{}{}
	}
	close(work)
	var (
		mu     sync.Mutex
		lat    []time.Duration    // guarded by mu
		errs   = map[string]int{} // guarded by mu
		wg     sync.WaitGroup
		failed int
	)
	start := time.Now()
	for range min(o.C, o.N) {
		wg.Go(func() {
			for range work {
				t0 := time.Now()
				_, err := c.ExchangeWire(ctx, o.Server, q)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs[err.Error()]++
					failed++
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	report(out, o, time.Since(start), lat, failed, errs)
	return nil
}

func report(out io.Writer, o Options, elapsed time.Duration, lat []time.Duration, failed int, errs map[string]int) {
	fmt.Fprintf(out, ";; %d queries to %s, %d in flight: %d answered, %d failed in %v (%.0f QPS)\n",
		o.N, o.Server, o.C, len(lat), failed, elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds())
	if len(lat) > 0 {
		slices.Sort(lat)
		p := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
		fmt.Fprintf(out, ";; latency p50 %v p90 %v p99 %v max %v\n", p(0.50), p(0.90), p(0.99), lat[len(lat)-1])
	}
	for e, n := range errs {
		fmt.Fprintf(out, ";; %d× %s\n", n, e)
	}
}
