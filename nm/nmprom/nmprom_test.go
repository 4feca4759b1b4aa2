package nmprom_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmprom"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// After a known load, a scrape shows it: messages received and sent,
// sockets open, per shard too; and the names pass the linter.
func TestCollectorAfterLoad(t *testing.T) {
	const n = 5
	m := nmtest.Manager(t, 1)
	l, err := nm.ListenUDP(context.Background(), m, "127.0.0.1:0", nm.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	wait := nmtest.Serve(t, l.Datagrams(), func(b []byte) [][]byte { return [][]byte{b} })
	c, err := nm.DialUDP(context.Background(), m, l.Addr().String(), nm.UDPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c.Send([]byte{byte(i)})
		if ev := nmtest.NextErr(t, c.Read(), nil); len(ev.Data) != 1 {
			t.Fatalf("reply %x", ev.Data)
		}
	}
	// A datagram counts as sent once sendmmsg returns, which may be after
	// the peer has it: wait for the last reply's count (a failure bound).
	deadline := time.Now().Add(nmtest.Timeout)
	for m.Stats().Of(nm.UDP).Sent < 2*n {
		if time.Now().After(deadline) {
			t.Fatalf("udp sent %d, want %d", m.Stats().Of(nm.UDP).Sent, 2*n)
		}
		time.Sleep(time.Millisecond) // polling a counter, bounded by the deadline
	}

	col := nmprom.NewCollector(m, nmprom.Options{PerShard: true, ConstLabels: prometheus.Labels{"server": "test"}})
	want := `
# HELP netmgr_messages_received_total Messages received (DNS messages on DNS listeners and clients).
# TYPE netmgr_messages_received_total counter
netmgr_messages_received_total{server="test",transport="http"} 0
netmgr_messages_received_total{server="test",transport="quic"} 0
netmgr_messages_received_total{server="test",transport="tcp"} 0
netmgr_messages_received_total{server="test",transport="tls"} 0
netmgr_messages_received_total{server="test",transport="udp"} 10
# HELP netmgr_sockets_open Sockets open now.
# TYPE netmgr_sockets_open gauge
netmgr_sockets_open{server="test",transport="http"} 0
netmgr_sockets_open{server="test",transport="quic"} 0
netmgr_sockets_open{server="test",transport="tcp"} 0
netmgr_sockets_open{server="test",transport="tls"} 0
netmgr_sockets_open{server="test",transport="udp"} 2
# HELP netmgr_shard_messages_sent_total Messages sent, by shard.
# TYPE netmgr_shard_messages_sent_total counter
netmgr_shard_messages_sent_total{server="test",shard="0",transport="http"} 0
netmgr_shard_messages_sent_total{server="test",shard="0",transport="quic"} 0
netmgr_shard_messages_sent_total{server="test",shard="0",transport="tcp"} 0
netmgr_shard_messages_sent_total{server="test",shard="0",transport="tls"} 0
netmgr_shard_messages_sent_total{server="test",shard="0",transport="udp"} 10
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"netmgr_messages_received_total", "netmgr_sockets_open", "netmgr_shard_messages_sent_total"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	c.Detach()
	l.Close()
	wait()
}
