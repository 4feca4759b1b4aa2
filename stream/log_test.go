package stream_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// refusedSoon dials addr and waits until the server closes the
// connection.
func refusedSoon(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !closedByServer(c, nmtest.Timeout) {
		t.Fatal("the server did not close the connection")
	}
}

// A client that opens 200 connections over the listener's cap gets each
// refused and counted, but logged a burst's worth of times, not 200.
func TestLogRefusedAtCapRateLimited(t *testing.T) {
	const over = 200
	m, logs := nmtest.LogManager(t, 1)
	l, err := stream.Listen(context.Background(), m, "127.0.0.1:0", stream.Config{MaxConns: 1, RefuseAtCap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c1, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1 := accept(t, l)
	defer s1.Detach()
	start := time.Now()
	for range over {
		refusedSoon(t, l.Addr().String())
	}
	elapsed := time.Since(start)
	if n := m.Stats().Of(nm.TCP).Refused; n != over {
		t.Fatalf("Refused = %d; want %d", n, over)
	}
	const msg = "stream: connection refused at the listener's cap"
	recs := logs.Records(msg)
	if limit := core.LogBurst + int(elapsed.Seconds()*core.LogRate) + 1; len(recs) < 1 || len(recs) > limit {
		t.Fatalf("%d records of %d refusals in %v; want 1 to %d", len(recs), over, elapsed, limit)
	}
	r := recs[0]
	if r.Level != slog.LevelWarn {
		t.Errorf("level %v; want Warn", r.Level)
	}
	if v, _ := nmtest.Attr(r, "addr"); v.Any() != l.Addr() {
		t.Errorf("addr %v; want %v", v, l.Addr())
	}
	if v, _ := nmtest.Attr(r, "max"); v.Int64() != 1 {
		t.Errorf("max %v; want 1", v)
	}
	if _, ok := nmtest.Attr(r, "peer"); !ok {
		t.Errorf("no peer: %v", r)
	}
}

// A connection refused by the per-client limits logs Warn with the
// reason.
func TestLogAdmissionRefused(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	l, err := stream.Listen(context.Background(), m, "127.0.0.1:0", stream.Config{MaxConnsPerClient: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c1, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1 := accept(t, l)
	defer s1.Detach()
	refusedSoon(t, l.Addr().String())
	recs := logs.Records("stream: connection refused by admission control")
	if len(recs) != 1 {
		t.Fatalf("%d records; want 1", len(recs))
	}
	if v, _ := nmtest.Attr(recs[0], "reason"); v.String() != "too many connections from the client" {
		t.Errorf("reason %q", v)
	}
	if recs[0].Level != slog.LevelWarn {
		t.Errorf("level %v; want Warn", recs[0].Level)
	}
}

// A client that fails its TLS handshake is logged at Info with its
// address and the error.
func TestLogTLSHandshakeFailure(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	l, err := stream.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // not a TLS ClientHello
	r := logs.Wait(t, "stream: TLS handshake failed", nmtest.Timeout)
	if r.Level != slog.LevelInfo {
		t.Errorf("level %v; want Info", r.Level)
	}
	if v, _ := nmtest.Attr(r, "peer"); v.String() != c.LocalAddr().String() {
		t.Errorf("peer %v; want %v", v, c.LocalAddr())
	}
	if _, ok := nmtest.Attr(r, "err"); !ok {
		t.Errorf("no err: %v", r)
	}
}

// A listener that cannot bind logs Warn with its address.
func TestLogStreamBindFailure(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	if l, err := stream.ListenTLS(context.Background(), m, addr, serverTLS, stream.Config{}); err == nil {
		l.Close()
		t.Fatalf("listener bound %v, which another socket holds", addr)
	}
	logs.One(t, "stream: cannot listen", slog.LevelWarn, "addr", addr, "transport", "tls")
}
