package nmprom_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmprom"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// answer replies to every request of l with the request, QR set, and
// reports each reply on replied once Send has returned (so its latency is
// counted). The returned function waits for l's channel to close.
func answer(t *testing.T, l *dnsmsg.Listener, replied chan<- struct{}) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range l.Requests() {
			if ev.Err != nil {
				continue
			}
			b := append([]byte(nil), ev.Data...)
			b[2] |= 0x80 // QR
			if err := ev.Handle.Send(b); err != nil {
				if !errors.Is(err, nm.ErrClosed) && !errors.Is(err, nm.ErrCanceled) {
					t.Errorf("Send: %v", err)
				}
			} else {
				replied <- struct{}{}
			}
			ev.Handle.Detach()
		}
	}()
	return func() {
		t.Helper()
		select {
		case <-done:
		case <-time.After(nmtest.Timeout):
			t.Fatalf("listener %v: channel not closed", l.Addr())
		}
	}
}

// exchange sends n queries to upstream through c, one at a time.
func exchange(t *testing.T, c *dnsmsg.Client, upstream string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nmtest.Timeout)
	defer cancel()
	for i := range n {
		q := new(dns.Msg)
		q.SetQuestion(fmt.Sprintf("q%d.example.", i), dns.TypeA)
		if _, err := c.Exchange(ctx, upstream, q); err != nil {
			t.Fatalf("%s: query %d: %v", upstream, i, err)
		}
	}
}

// waitReplies waits until n replies were reported on replied.
func waitReplies(t *testing.T, replied <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(nmtest.Timeout)
	for i := range n {
		select {
		case <-replied:
		case <-deadline:
			t.Fatalf("%d replies of %d sent", i, n)
		}
	}
}

// waitSent polls m until its endpoints have sent n messages in all; the
// deadline bounds the wait as a failure, it is not a delay.
func waitSent(t *testing.T, m *nm.Manager, n int64) {
	t.Helper()
	deadline := time.Now().Add(nmtest.Timeout)
	for {
		var sent int64
		for _, e := range m.Endpoints() {
			sent += e.Sent
		}
		if sent >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints sent %d messages, want %d", sent, n)
		}
		time.Sleep(time.Millisecond) // polling a counter, bounded by the deadline
	}
}

// scrape gathers col through a pedantic registry (which checks that
// what is collected matches what is described) and returns the families
// by name.
func scrape(t *testing.T, col prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily)
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series returns the metric of family name whose labels include want, and
// fails unless there is exactly one.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	var found []*dto.Metric
	for _, m := range mfs[name].GetMetric() {
		have := make(map[string]string)
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for k, v := range want {
			if have[k] != v {
				ok = false
			}
		}
		if ok {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(found))
	}
	return found[0]
}

// checkHistogram checks h's shape: bucket bounds ascending, 1 µs to
// about 4.2 s (2^k µs), cumulative counts that never go down and stay
// within the count; and that it counts count latencies.
func checkHistogram(t *testing.T, what string, h *dto.Histogram, count uint64) {
	t.Helper()
	if h.GetSampleCount() != count {
		t.Errorf("%s: count %d, want %d", what, h.GetSampleCount(), count)
	}
	bs := h.GetBucket()
	if len(bs) != nm.HistogramBuckets-1 {
		t.Fatalf("%s: %d buckets, want %d (and +Inf)", what, len(bs), nm.HistogramBuckets-1)
	}
	for k, b := range bs {
		if want := nm.HistogramBound(k).Seconds(); b.GetUpperBound() != want {
			t.Errorf("%s: bucket %d bound %g s, want %g", what, k, b.GetUpperBound(), want)
		}
		if k > 0 && (b.GetUpperBound() <= bs[k-1].GetUpperBound() || b.GetCumulativeCount() < bs[k-1].GetCumulativeCount()) {
			t.Errorf("%s: bucket %d (%g s, %d) after (%g s, %d)", what, k,
				b.GetUpperBound(), b.GetCumulativeCount(), bs[k-1].GetUpperBound(), bs[k-1].GetCumulativeCount())
		}
	}
	if bs[0].GetUpperBound() != 1e-6 || math.Abs(bs[len(bs)-1].GetUpperBound()-4.194304) > 1e-9 {
		t.Errorf("%s: bounds %g to %g s, want 1e-06 to 4.194304", what, bs[0].GetUpperBound(), bs[len(bs)-1].GetUpperBound())
	}
	if last := bs[len(bs)-1].GetCumulativeCount(); last > count {
		t.Errorf("%s: %d in the buckets, more than the count %d", what, last, count)
	}
	// Replies on loopback take well under 4 s each, and more than nothing.
	if s := h.GetSampleSum(); count > 0 && (s <= 0 || s > 4*float64(count)) {
		t.Errorf("%s: sum %g s for %d latencies", what, s, count)
	}
}

// After a known load on two named listeners, asked by a named client, a
// scrape shows each endpoint's messages and latencies, and the per
// transport latency histograms; the names pass the linter.
func TestCollectorEndpoints(t *testing.T) {
	const nUDP, nTCP = 7, 4
	m := nmtest.Manager(t, 2)
	ctx := context.Background()
	auth, err := dnsmsg.ListenUDP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := dnsmsg.ListenTCP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "rec"})
	if err != nil {
		t.Fatal(err)
	}
	replied := make(chan struct{}, nUDP+nTCP)
	waitAuth, waitRec := answer(t, auth, replied), answer(t, rec, replied)
	c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{Name: "fwd"})
	udpUp, tcpUp := "udp://"+auth.Addr().String(), "tcp://"+rec.Addr().String()
	exchange(t, c, udpUp, nUDP)
	exchange(t, c, tcpUp, nTCP)
	waitReplies(t, replied, nUDP+nTCP)
	// A message counts as sent once its write returns, which may be after
	// the peer has it: wait for the counts, then scrape.
	waitSent(t, m, nUDP+nTCP+nUDP+nTCP)

	col := nmprom.NewCollector(m, nmprom.Options{})
	mfs := scrape(t, col)
	for _, e := range []struct {
		transport, role, name, addr string
		n                           uint64
	}{
		{"udp", "listener", "auth", auth.Addr().String(), nUDP},
		{"tcp", "listener", "rec", rec.Addr().String(), nTCP},
		{"udp", "client", "fwd", udpUp, nUDP},
		{"tcp", "client", "fwd", tcpUp, nTCP},
	} {
		labels := map[string]string{"transport": e.transport, "role": e.role, "name": e.name, "addr": e.addr}
		for _, name := range []string{"netmgr_endpoint_messages_received_total", "netmgr_endpoint_messages_sent_total"} {
			if v := series(t, mfs, name, labels).GetCounter().GetValue(); v != float64(e.n) {
				t.Errorf("%s%v = %g, want %d", name, labels, v, e.n)
			}
		}
		for _, name := range []string{"netmgr_endpoint_dropped_total", "netmgr_endpoint_requests_shed_total",
			"netmgr_endpoint_requests_expired_total", "netmgr_endpoint_connections_refused_total"} {
			if v := series(t, mfs, name, labels).GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %g, want 0", name, labels, v)
			}
		}
		checkHistogram(t, fmt.Sprint("netmgr_endpoint_request_duration_seconds", labels),
			series(t, mfs, "netmgr_endpoint_request_duration_seconds", labels).GetHistogram(), e.n)
	}
	// One UDP socket per shard; the TCP listener accepted the client's
	// connection.
	labels := map[string]string{"transport": "udp", "role": "listener", "name": "auth"}
	if v := series(t, mfs, "netmgr_endpoint_sockets_open", labels).GetGauge().GetValue(); v != 2 {
		t.Errorf("netmgr_endpoint_sockets_open%v = %g, want 2", labels, v)
	}
	labels = map[string]string{"transport": "tcp", "role": "listener", "name": "rec"}
	if v := series(t, mfs, "netmgr_endpoint_connections_accepted_total", labels).GetCounter().GetValue(); v < 1 {
		t.Errorf("netmgr_endpoint_connections_accepted_total%v = %g, want at least 1", labels, v)
	}
	for _, reason := range []string{"write_timeout", "output_full", "flood", "too_large"} {
		labels["reason"] = reason
		if v := series(t, mfs, "netmgr_endpoint_conversations_cut_total", labels).GetCounter().GetValue(); v != 0 {
			t.Errorf("netmgr_endpoint_conversations_cut_total%v = %g, want 0", labels, v)
		}
	}

	// Per transport: every listener's and client's latencies; the
	// listener's count is the replies its listeners sent.
	for _, h := range []struct {
		transport, role string
		n               uint64
	}{
		{"udp", "listener", nUDP}, {"tcp", "listener", nTCP},
		{"udp", "client", nUDP}, {"tcp", "client", nTCP},
		{"tls", "listener", 0}, {"http", "client", 0},
	} {
		labels := map[string]string{"transport": h.transport, "role": h.role}
		hist := series(t, mfs, "netmgr_request_duration_seconds", labels).GetHistogram()
		checkHistogram(t, fmt.Sprint("netmgr_request_duration_seconds", labels), hist, h.n)
		if h.role != "listener" || h.n == 0 {
			continue
		}
		// One listener per transport here: its replies are the transport's.
		sent := series(t, mfs, "netmgr_endpoint_messages_sent_total", map[string]string{"transport": h.transport, "role": "listener"})
		if v := sent.GetCounter().GetValue(); hist.GetSampleCount() != uint64(v) {
			t.Errorf("%s listeners: %d latencies, %g replies sent", h.transport, hist.GetSampleCount(), v)
		}
	}

	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	c.Close()
	auth.Close()
	rec.Close()
	waitAuth()
	waitRec()
}

// Endpoints that carry the same labels (two Clients of one name asking
// one upstream) are added up into one series set, a name that is not
// UTF-8 still scrapes, and NoEndpoints leaves the endpoint series out.
func TestCollectorEndpointLabels(t *testing.T) {
	m := nmtest.Manager(t, 1)
	l, err := dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "bad\xffname"})
	if err != nil {
		t.Fatal(err)
	}
	replied := make(chan struct{}, 5)
	wait := answer(t, l, replied)
	up := "udp://" + l.Addr().String()
	c1 := dnsmsg.NewClient(m, dnsmsg.ClientConfig{Name: "fwd"})
	c2 := dnsmsg.NewClient(m, dnsmsg.ClientConfig{Name: "fwd"})
	exchange(t, c1, up, 2)
	exchange(t, c2, up, 3)
	waitReplies(t, replied, 5)
	waitSent(t, m, 10)

	col := nmprom.NewCollector(m, nmprom.Options{})
	mfs := scrape(t, col)
	labels := map[string]string{"transport": "udp", "role": "client", "name": "fwd", "addr": up}
	if v := series(t, mfs, "netmgr_endpoint_messages_received_total", labels).GetCounter().GetValue(); v != 5 {
		t.Errorf("netmgr_endpoint_messages_received_total%v = %g, want 5", labels, v)
	}
	if n := series(t, mfs, "netmgr_endpoint_request_duration_seconds", labels).GetHistogram().GetSampleCount(); n != 5 {
		t.Errorf("netmgr_endpoint_request_duration_seconds%v counts %d, want 5", labels, n)
	}
	labels = map[string]string{"transport": "udp", "role": "listener", "name": "bad\uFFFDname"}
	if v := series(t, mfs, "netmgr_endpoint_messages_sent_total", labels).GetCounter().GetValue(); v != 5 {
		t.Errorf("netmgr_endpoint_messages_sent_total%v = %g, want 5", labels, v)
	}

	mfs = scrape(t, nmprom.NewCollector(m, nmprom.Options{NoEndpoints: true}))
	for name := range mfs {
		if strings.HasPrefix(name, "netmgr_endpoint_") {
			t.Errorf("NoEndpoints: %s scraped", name)
		}
	}
	if n := series(t, mfs, "netmgr_request_duration_seconds", map[string]string{"transport": "udp", "role": "client"}).
		GetHistogram().GetSampleCount(); n != 5 {
		t.Errorf("NoEndpoints: udp client latencies %d, want 5", n)
	}

	// The sum never goes down when one of them closes: what c1 counted
	// stays in it while c2 is open; with c2 closed too, the series go.
	labels = map[string]string{"transport": "udp", "role": "client", "name": "fwd", "addr": up}
	c1.Close()
	mfs = scrape(t, col)
	if v := series(t, mfs, "netmgr_endpoint_messages_received_total", labels).GetCounter().GetValue(); v != 5 {
		t.Errorf("after one Client closed: netmgr_endpoint_messages_received_total%v = %g, want still 5", labels, v)
	}
	if n := series(t, mfs, "netmgr_endpoint_request_duration_seconds", labels).GetHistogram().GetSampleCount(); n != 5 {
		t.Errorf("after one Client closed: netmgr_endpoint_request_duration_seconds%v counts %d, want still 5", labels, n)
	}
	exchange(t, c2, up, 1)
	waitReplies(t, replied, 1)
	if v := series(t, scrape(t, col), "netmgr_endpoint_messages_received_total", labels).GetCounter().GetValue(); v != 6 {
		t.Errorf("after one more query: netmgr_endpoint_messages_received_total%v = %g, want 6", labels, v)
	}
	c2.Close()
	for _, mt := range scrape(t, col)["netmgr_endpoint_messages_received_total"].GetMetric() {
		for _, lp := range mt.GetLabel() {
			if lp.GetName() == "name" && lp.GetValue() == "fwd" {
				t.Errorf("a series of the closed Clients is still scraped: %v", mt.GetLabel())
			}
		}
	}
	l.Close()
	wait()
}
