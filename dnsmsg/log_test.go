package dnsmsg_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// Requests shed because the consumer fell behind are logged at Warn with
// the client's address, within the rate limit: 16 sheds in a moment give
// at most a burst of records.
func TestLogStreamShed(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	k := skinds[0]
	l := k.listen(t, m, dnsmsg.ServerConfig{Queue: 4})
	c := k.raw(t, l)
	ids := map[uint16]bool{}
	var queries []byte
	for i := uint16(1); i <= 20; i++ {
		queries = append(queries, frame(queryID(t, "shed.example", i))...)
		ids[i] = true
	}
	start := time.Now()
	c.Write(queries)
	expectRcode(t, c, 16, dnsmsg.RcodeRefused, ids)
	elapsed := time.Since(start)
	recs := logs.Records("dnsmsg: request shed: consumers fell behind")
	if limit := min(16, core.LogBurst+int(elapsed.Seconds()*core.LogRate)+1); len(recs) < 1 || len(recs) > limit {
		t.Fatalf("%d records of 16 sheds in %v; want 1 to %d", len(recs), elapsed, limit)
	}
	r := recs[0]
	if r.Level != slog.LevelWarn {
		t.Errorf("level %v; want Warn", r.Level)
	}
	if v, _ := nmtest.Attr(r, "peer"); v.String() != c.LocalAddr().String() {
		t.Errorf("peer %v; want %v", v, c.LocalAddr())
	}
	if v, _ := nmtest.Attr(r, "transport"); v.String() != "tcp" {
		t.Errorf("transport %v; want tcp", v)
	}
	for range 4 {
		ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
		ev.Handle.Detach()
	}
	l.Close()
	nmtest.Drain(t, l.Requests(), nmtest.Timeout)
}

// A listener's drain logs Info when it begins, with the connections
// open, and when it ends, drained.
func TestLogStreamDrain(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	k := skinds[0]
	l := k.listen(t, m, dnsmsg.ServerConfig{})
	c := k.raw(t, l)
	c.Write(frame(queryID(t, "drain.example", 7)))
	ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
	done := make(chan error, 1)
	go func() { done <- l.Shutdown(context.Background()) }()
	begin := logs.Wait(t, "dnsmsg: listener drain begins", nmtest.Timeout)
	if begin.Level != slog.LevelInfo {
		t.Errorf("level %v; want Info", begin.Level)
	}
	if v, _ := nmtest.Attr(begin, "connections"); v.Int64() != 1 {
		t.Errorf("connections %v; want 1", v)
	}
	if v, _ := nmtest.Attr(begin, "addr"); v.Any() != l.Addr() {
		t.Errorf("addr %v; want %v", v, l.Addr())
	}
	if len(logs.Records("dnsmsg: listener drain ended")) != 0 {
		t.Error("the drain logged its end with a request unanswered")
	}
	ev.Handle.Send(asReply(ev.Data)[0])
	ev.Handle.Detach()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	recs := logs.Records("dnsmsg: listener drain ended")
	if len(recs) != 1 {
		t.Fatalf("%d records of the drain's end; want 1", len(recs))
	}
	if v, _ := nmtest.Attr(recs[0], "drained"); !v.Bool() {
		t.Errorf("drained %v; want true", v)
	}
	if _, ok := nmtest.Attr(recs[0], "err"); ok {
		t.Errorf("an err on a drain that completed: %v", recs[0])
	}
	nmtest.Drain(t, l.Requests(), nmtest.Timeout)
}

// A DoQ listener that cannot bind logs Warn with its address.
func TestLogQUICBindFailure(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.LocalAddr().String()
	if l, err := dnsmsg.ListenQUIC(context.Background(), m, addr, serverTLS, dnsmsg.ServerConfig{}); err == nil {
		l.Close()
		t.Fatalf("listener bound %v, which another socket holds", addr)
	}
	logs.One(t, "dnsmsg: cannot listen", slog.LevelWarn, "addr", addr, "transport", "quic")
}

// A DoH client that floods PINGs, frames that carry no request, is cut
// off, and the cut is logged at Warn with its address and the reason.
func TestLogDoHFloodCut(t *testing.T) {
	m, logs := nmtest.LogManager(t, 1)
	l := hkinds[0].listen(t, m, dnsmsg.HTTPConfig{})
	wait := nmtest.Serve(t, requests(l), asReply)
	defer func() { l.Close(); wait() }()
	r, w := dialSlowReader(t, l.Addr().String())
	r.conn.SetWriteDeadline(time.Now().Add(nmtest.Timeout))
	for i := 0; i < 2_000_000; i++ {
		if r.fr.WritePing(false, [8]byte{byte(i)}) != nil || (w.Buffered() > 32<<10 && w.Flush() != nil) {
			break
		}
	}
	rec := logs.Wait(t, "dnsmsg: DoH flood cut: frames with no request", nmtest.Timeout)
	if rec.Level != slog.LevelWarn {
		t.Errorf("level %v; want Warn", rec.Level)
	}
	if v, _ := nmtest.Attr(rec, "peer"); v.String() != r.conn.LocalAddr().String() {
		t.Errorf("peer %v; want %v", v, r.conn.LocalAddr())
	}
	if n := m.Stats().Of(nm.HTTP).Floods; n != 1 {
		t.Errorf("Floods = %d; want 1", n)
	}
}
