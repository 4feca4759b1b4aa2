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
// (Manager.Stats): collecting costs the library nothing between scrapes.
package nmprom

import (
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
	c := &Collector{m: m, perShard: o.PerShard}
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
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.counters {
		ch <- d.desc
	}
	ch <- c.open
	ch <- c.cutoffs
	if c.perShard {
		ch <- c.shardIn
		ch <- c.shardOut
	}
}

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
	}
	if c.perShard {
		c.collectShards(ch)
	}
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
