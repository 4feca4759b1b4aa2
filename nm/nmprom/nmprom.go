// Package nmprom exports the statistics of a netmgr Manager to
// Prometheus, through github.com/prometheus/client_golang. It is a package
// of its own so that importing nm alone pulls in no Prometheus code.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(nmprom.NewCollector(m, nmprom.Options{}))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Every series carries a transport label (udp, tcp, tls, http, quic). Counters
// follow Prometheus conventions: names end in _total, in base units.
// Values are read from the manager's live counters at each scrape
// (Manager.Stats, Manager.Endpoints, Manager.Latency): collecting costs
// the library nothing between scrapes.
//
// Latencies are Prometheus histograms in seconds, with buckets bounded at
// 2^k µs (1 µs to about 4.2 s): netmgr_request_duration_seconds{transport,
// role} per transport, where role "listener" is the time from a request's
// delivery to its first reply and role "client" the time from a query's
// send to its reply (closed listeners and clients included).
//
// Unless Options.NoEndpoints, every listener and every client upstream
// open (nm.Manager.Endpoints) has series of its own, labelled transport,
// role, name (the Name of its configuration, else its address) and addr:
// netmgr_endpoint_messages_received_total, ..._messages_sent_total,
// ..._dropped_total, ..._requests_shed_total, ..._requests_expired_total,
// ..._connections_accepted_total, ..._connections_refused_total,
// ..._conversations_cut_total{reason}, the gauge ..._sockets_open and the
// histogram netmgr_endpoint_request_duration_seconds. They are families of
// their own, so the per-transport series still add up the whole manager.
// An endpoint's series go when it closes (its counts stay in the
// per-transport series). Endpoints that carry the same labels (two
// Clients of one name asking one upstream) share series, which add them
// up; while one of them stays open, what the closed ones counted up to the
// last scrape stays in the sum, so that it never goes down.
package nmprom

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rainbowduck/netmgr/nm"
)

// Options configures a Collector. The zero value is ready to use.
type Options struct {
	// Namespace prefixes every metric name. If empty, "netmgr".
	Namespace string
	// ConstLabels are added to every series (a server's name, say).
	ConstLabels prometheus.Labels
	// PerShard adds series of the messages each shard sent and received,
	// labelled by shard, to see how evenly the kernel spreads the load.
	PerShard bool
	// NoEndpoints leaves out the per-endpoint series (netmgr_endpoint_*).
	// They are on by default. Their cardinality is one set of series per
	// listener and per client upstream open: 38 series each (11 counters,
	// a gauge, and a histogram of 24 buckets with its sum and count). A
	// Client asking many upstreams, or listeners opened often on new
	// addresses, multiply them; turn them off there.
	NoEndpoints bool
}

// Collector is a prometheus.Collector of a Manager's statistics. It is safe
// for concurrent use.
type Collector struct {
	m        *nm.Manager
	perShard bool
	counters []counterDesc
	open     *prometheus.Desc
	cutoffs  *prometheus.Desc
	shardIn  *prometheus.Desc
	shardOut *prometheus.Desc
	latency  *prometheus.Desc

	endpoints bool
	epCounter []counterDesc
	epOpen    *prometheus.Desc
	epCutoffs *prometheus.Desc
	epLatency *prometheus.Desc

	mu      sync.Mutex                   // scrapes may run at once
	seen    map[uint64]seenEndpoint      // the endpoints of the last scrape, by ID; guarded by mu
	retired map[endpointKey]*nm.Endpoint // what closed endpoints counted, by labels still in use; guarded by mu
}

// counterDesc is one counter of nm.Totals and its series.
type counterDesc struct {
	desc  *prometheus.Desc
	value func(t *nm.Totals) int64
}

// NewCollector returns a collector of m's statistics.
func NewCollector(m *nm.Manager, o Options) *Collector {
	ns := o.Namespace
	if ns == "" {
		ns = "netmgr"
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help,
			append([]string{"transport"}, labels...), o.ConstLabels)
	}
	c := &Collector{m: m, perShard: o.PerShard, endpoints: !o.NoEndpoints, retired: make(map[endpointKey]*nm.Endpoint)}
	for _, d := range []struct {
		name, help string
		value      func(t *nm.Totals) int64
	}{
		{"sockets_opened_total", "Sockets opened: listening and client sockets.", func(t *nm.Totals) int64 { return t.Opened }},
		{"sockets_closed_total", "Sockets closed.", func(t *nm.Totals) int64 { return t.Closed }},
		{"bind_failures_total", "Binds that failed.", func(t *nm.Totals) int64 { return t.BindFailed }},
		{"connections_accepted_total", "Connections accepted.", func(t *nm.Totals) int64 { return t.Accepted }},
		{"connections_refused_total", "Connections refused by admission control.", func(t *nm.Totals) int64 { return t.Refused }},
		{"messages_received_total", "Messages received (DNS messages on DNS listeners and clients).", func(t *nm.Totals) int64 { return t.Received }},
		{"messages_sent_total", "Messages sent.", func(t *nm.Totals) int64 { return t.Sent }},
		{"read_syscalls_total", "Read system calls that returned data.", func(t *nm.Totals) int64 { return t.Reads }},
		{"write_syscalls_total", "Write system calls.", func(t *nm.Totals) int64 { return t.Writes }},
		{"receive_errors_total", "Reads that failed.", func(t *nm.Totals) int64 { return t.RecvFailed }},
		{"send_errors_total", "Sends that failed.", func(t *nm.Totals) int64 { return t.SendFailed }},
		{"dropped_total", "Input dropped: malformed, oversized, unexpected, or no room in a queue.", func(t *nm.Totals) int64 { return t.Dropped }},
		{"requests_expired_total", "Requests left unanswered past the request timeout, whose place was reclaimed.", func(t *nm.Totals) int64 { return t.Expired }},
		{"requests_shed_total", "Requests refused at once because consumers fell behind.", func(t *nm.Totals) int64 { return t.Shed }},
		{"handler_panics_total", "Handler panics recovered, each answered SERVFAIL.", func(t *nm.Totals) int64 { return t.Panics }},
	} {
		c.counters = append(c.counters, counterDesc{desc(d.name, d.help), d.value})
	}
	c.open = desc("sockets_open", "Sockets open now.")
	c.cutoffs = desc("conversations_cut_total", "Conversations cut off to protect the server, by reason.", "reason")
	c.shardIn = desc("shard_messages_received_total", "Messages received, by shard.", "shard")
	c.shardOut = desc("shard_messages_sent_total", "Messages sent, by shard.", "shard")
	c.latency = desc("request_duration_seconds",
		"Request latency: for role listener, from a request's delivery to its first reply; for role client, from a query's send to its reply.",
		"role")

	ep := func(name, help string, labels ...string) *prometheus.Desc {
		return desc("endpoint_"+name, help+" Per listener or client upstream.", append([]string{"role", "name", "addr"}, labels...)...)
	}
	for _, d := range []struct {
		name, help string
		value      func(t *nm.Totals) int64
	}{
		{"messages_received_total", "Messages received.", func(t *nm.Totals) int64 { return t.Received }},
		{"messages_sent_total", "Messages sent.", func(t *nm.Totals) int64 { return t.Sent }},
		{"dropped_total", "Input dropped: malformed, oversized, unexpected, or no room in a queue.", func(t *nm.Totals) int64 { return t.Dropped }},
		{"requests_shed_total", "Requests refused at once because consumers fell behind.", func(t *nm.Totals) int64 { return t.Shed }},
		{"requests_expired_total", "Requests left unanswered past the request timeout, whose place was reclaimed.", func(t *nm.Totals) int64 { return t.Expired }},
		{"connections_accepted_total", "Connections accepted.", func(t *nm.Totals) int64 { return t.Accepted }},
		{"connections_refused_total", "Connections refused by admission control.", func(t *nm.Totals) int64 { return t.Refused }},
	} {
		c.epCounter = append(c.epCounter, counterDesc{ep(d.name, d.help), d.value})
	}
	c.epOpen = ep("sockets_open", "Sockets open now.")
	c.epCutoffs = ep("conversations_cut_total", "Conversations cut off to protect the server, by reason.", "reason")
	c.epLatency = ep("request_duration_seconds",
		"Request latency: for role listener, from a request's delivery to its first reply; for role client, from a query's send to its reply.")
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.counters {
		ch <- d.desc
	}
	ch <- c.open
	ch <- c.cutoffs
	ch <- c.latency
	if c.perShard {
		ch <- c.shardIn
		ch <- c.shardOut
	}
	if c.endpoints {
		for _, d := range c.epCounter {
			ch <- d.desc
		}
		ch <- c.epOpen
		ch <- c.epCutoffs
		ch <- c.epLatency
	}
}

// roles are the values of the role label.
var roles = []string{"listener", "client"}

// cutReasons are the reasons conversations are cut off, as labels.
var cutReasons = []struct {
	label string
	value func(t *nm.Totals) int64
}{
	{"write_timeout", func(t *nm.Totals) int64 { return t.WriteTimeouts }},
	{"output_full", func(t *nm.Totals) int64 { return t.OutputFull }},
	{"flood", func(t *nm.Totals) int64 { return t.Floods }},
	{"too_large", func(t *nm.Totals) int64 { return t.TooLarge }},
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Stats()
	for _, tr := range nm.Transports() {
		t := st.Of(tr)
		name := tr.String()
		for _, d := range c.counters {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.value(&t)), name)
		}
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(t.Active), name)
		for _, r := range cutReasons {
			ch <- prometheus.MustNewConstMetric(c.cutoffs, prometheus.CounterValue, float64(r.value(&t)), name, r.label)
		}
		for _, role := range roles {
			ch <- histogram(c.latency, c.m.Latency(tr, role), name, role)
		}
	}
	if c.perShard {
		c.collectShards(ch)
	}
	if c.endpoints {
		c.collectEndpoints(ch)
	}
}

// endpointKey is the labels of an endpoint's series.
type endpointKey struct{ transport, role, name, addr string }

// collectEndpoints sends the series of every endpoint open. Endpoints
// with the same labels (two Clients of one name asking one upstream, say)
// are added up: a scrape must not carry a series twice. So that such a sum
// never goes down when one of them closes (Prometheus would read a counter
// reset), what a closed endpoint had counted at the last scrape stays in
// the sum for as long as endpoints with its labels remain.
func (c *Collector) collectEndpoints(ch chan<- prometheus.Metric) {
	var (
		keys []endpointKey
		eps  = make(map[endpointKey]*nm.Endpoint)
		seen = make(map[uint64]seenEndpoint)
	)
	for _, e := range c.m.Endpoints() {
		// Label values must be UTF-8, or the whole scrape fails.
		k := endpointKey{e.Transport.String(), e.Role, strings.ToValidUTF8(e.Name, "\uFFFD"), strings.ToValidUTF8(e.Addr, "\uFFFD")}
		seen[e.ID] = seenEndpoint{k, e}
		if sum := eps[k]; sum != nil {
			addEndpoint(sum, &e)
			continue
		}
		keys = append(keys, k)
		eps[k] = &e
	}
	c.mu.Lock()
	for id, s := range c.seen {
		if _, open := seen[id]; open || eps[s.key] == nil {
			continue
		}
		gone := s.e
		gone.Active = 0 // a gauge: its sockets are closed
		if r := c.retired[s.key]; r != nil {
			addEndpoint(r, &gone)
		} else {
			c.retired[s.key] = &gone
		}
	}
	for k, r := range c.retired {
		if eps[k] == nil {
			delete(c.retired, k) // no endpoint left: its series go
			continue
		}
		addEndpoint(eps[k], r)
	}
	c.seen = seen
	c.mu.Unlock()
	for _, k := range keys {
		e := eps[k]
		labels := []string{k.transport, k.role, k.name, k.addr}
		for _, d := range c.epCounter {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.value(&e.Totals)), labels...)
		}
		ch <- prometheus.MustNewConstMetric(c.epOpen, prometheus.GaugeValue, float64(e.Active), labels...)
		for _, r := range cutReasons {
			ch <- prometheus.MustNewConstMetric(c.epCutoffs, prometheus.CounterValue, float64(r.value(&e.Totals)), append(labels, r.label)...)
		}
		ch <- histogram(c.epLatency, e.Latency, labels...)
	}
}

// seenEndpoint is an endpoint of the last scrape, with its labels.
type seenEndpoint struct {
	key endpointKey
	e   nm.Endpoint
}

// addEndpoint adds b's counts into a.
func addEndpoint(a, b *nm.Endpoint) {
	addTotals(&a.Totals, &b.Totals)
	for i, n := range b.Latency.Counts {
		a.Latency.Counts[i] += n
	}
	a.Latency.Sum += b.Latency.Sum
}

// addTotals adds the counters the endpoint series show of b into a.
func addTotals(a, b *nm.Totals) {
	a.Received += b.Received
	a.Sent += b.Sent
	a.Dropped += b.Dropped
	a.Shed += b.Shed
	a.Expired += b.Expired
	a.Accepted += b.Accepted
	a.Refused += b.Refused
	a.Active += b.Active
	a.WriteTimeouts += b.WriteTimeouts
	a.OutputFull += b.OutputFull
	a.Floods += b.Floods
	a.TooLarge += b.TooLarge
}

// bucketBounds are the upper bounds of nm.Histogram's buckets in seconds,
// the last (unbounded) one left out: Prometheus adds +Inf itself.
var bucketBounds = func() []float64 {
	var b []float64
	for k := range nm.HistogramBuckets {
		if d := nm.HistogramBound(k); d > 0 {
			b = append(b, d.Seconds())
		}
	}
	return b
}()

// histogram returns h as a Prometheus histogram: cumulative counts by
// upper bound in seconds, the sum in seconds.
func histogram(d *prometheus.Desc, h nm.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bucketBounds))
	var n uint64
	for k, c := range h.Counts {
		n += c
		if k < len(bucketBounds) {
			buckets[bucketBounds[k]] = n
		}
	}
	return prometheus.MustNewConstHistogram(d, n, h.Sum.Seconds(), buckets, labels...)
}

func (c *Collector) collectShards(ch chan<- prometheus.Metric) {
	for i := range c.m.Workers() {
		st := c.m.ShardStats(i)
		shard := itoa(i)
		for _, tr := range nm.Transports() {
			t := st.Of(tr)
			ch <- prometheus.MustNewConstMetric(c.shardIn, prometheus.CounterValue, float64(t.Received), tr.String(), shard)
			ch <- prometheus.MustNewConstMetric(c.shardOut, prometheus.CounterValue, float64(t.Sent), tr.String(), shard)
		}
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
