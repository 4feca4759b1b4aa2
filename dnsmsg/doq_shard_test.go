package dnsmsg_test

import (
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
)

// With 2 shards, a client whose source port changes mid-connection keeps
// getting answers: its packets are steered by connection ID to the shard
// that owns the connection, whatever the kernel's hash of its new address.
func TestDoQMigrationAcrossShards(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("connection-ID steering is Linux only")
	}
	m := newManager(t, 2)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	wait := echoServer(t, l, asReply)
	tr := clientTransport(t)
	ctx, cancel := context.WithTimeout(context.Background(), doqBound)
	defer cancel()
	qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(l.Addr()), doqClientTLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rawExchange(t, qc, doqQuery("before.example."))
	const moves = 8 // without steering, each move lands on the wrong shard half the time
	for i := range moves {
		path, err := qc.AddPath(clientTransport(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := path.Probe(ctx); err != nil {
			t.Fatalf("move %d: probe: %v", i, err)
		}
		if err := path.Switch(); err != nil {
			t.Fatalf("move %d: switch: %v", i, err)
		}
		if r := rawExchange(t, qc, doqQuery("moved.example.")); !dnsmsg.IsResponse(r) {
			t.Fatalf("move %d: reply %x; want a response", i, r)
		}
	}
	qc.CloseWithError(0, "")
	l.Close()
	if r := wait(); len(r.Data) != moves+1 {
		t.Errorf("%d requests served; want %d", len(r.Data), moves+1)
	}
}

// clientTransport is a QUIC transport on a new loopback UDP socket (a new
// source port), closed at the end of the test.
func clientTransport(t *testing.T) *quic.Transport {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: c}
	t.Cleanup(func() { tr.Close(); c.Close() })
	return tr
}
