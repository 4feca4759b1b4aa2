package dnsmsg_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// doqBound is a failure bound for one DoQ event in tests.
const doqBound = 10 * time.Second

func listenQUIC(t testing.TB, m *nm.Manager, cfg dnsmsg.ServerConfig) *dnsmsg.Listener {
	t.Helper()
	l, err := dnsmsg.ListenQUIC(context.Background(), m, "127.0.0.1:0", serverTLS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// doqClientTLS is the TLS configuration of raw DoQ clients in tests.
func doqClientTLS() *tls.Config {
	c := clientTLS.Clone()
	c.NextProtos = []string{dnsmsg.ALPNDoQ}
	return c
}

// dialRaw opens a raw quic-go connection to a DoQ listener; it is closed
// at the end of the test.
func dialRaw(t testing.TB, l *dnsmsg.Listener, qcfg *quic.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), doqBound)
	defer cancel()
	qc, err := quic.DialAddr(ctx, l.Addr().String(), doqClientTLS(), qcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// doqQuery is a query with ID 0, as DoQ clients send them.
func doqQuery(name string) []byte {
	q := query(name)
	q.Id = 0
	b, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// openWrite opens a stream and writes raw on it, with a FIN if fin.
func openWrite(t testing.TB, qc *quic.Conn, raw []byte, fin bool) *quic.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), doqBound)
	defer cancel()
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(raw); err != nil {
		t.Fatal(err)
	}
	if fin {
		str.Close()
	}
	return str
}

// readReply reads a stream's framed reply to its end.
func readReply(t testing.TB, str *quic.Stream) ([]byte, error) {
	t.Helper()
	str.SetReadDeadline(time.Now().Add(doqBound))
	b, err := io.ReadAll(str)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		t.Fatalf("reply framing: %d bytes, prefix %x", len(b), b[:min(2, len(b))])
	}
	return b[2:], nil
}

// rawExchange sends msg on a new stream and returns the reply.
func rawExchange(t testing.TB, qc *quic.Conn, msg []byte) []byte {
	t.Helper()
	r, err := readReply(t, openWrite(t, qc, frame(msg), true))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantClosedWith waits for qc to be closed by the server with code.
func wantClosedWith(t testing.TB, qc *quic.Conn, code quic.ApplicationErrorCode) {
	t.Helper()
	select {
	case <-qc.Context().Done():
	case <-time.After(doqBound):
		t.Fatalf("connection still open; want it closed with code %#x", code)
	}
	var ae *quic.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != code || !ae.Remote {
		t.Fatalf("connection closed with %v; want the server's application error %#x", err, code)
	}
}

// wantStreamReset checks that err is the server's reset of a stream with
// code.
func wantStreamReset(t testing.TB, err error, code quic.ApplicationErrorCode) {
	t.Helper()
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(code) || !se.Remote {
		t.Fatalf("stream ended with %v; want the server's reset %#x", err, code)
	}
}

// quicStats returns the DoQ totals of m.
func quicStats(m *nm.Manager) nm.Totals { return m.Stats().Of(nm.QUIC) }

// pollStat waits, within doqBound, for get to reach want.
func pollStat(t testing.TB, what string, get func() int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(doqBound)
	for get() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d; want %d", what, get(), want)
		}
		time.Sleep(time.Millisecond) // polling a counter, bounded by the deadline
	}
}

// holdRequests receives requests from l without answering them, for tests
// of bounds; it returns the channel of their events.
func holdRequests(l *dnsmsg.Listener) <-chan nm.Event { return l.Requests() }

// closeAndDrain closes l and checks its channel's final event.
func closeAndDrain(t testing.TB, l *dnsmsg.Listener) nmtest.Result {
	t.Helper()
	l.Close()
	return nmtest.Drain(t, l.Requests(), doqBound)
}

// ednsQuery is a DoQ query with an OPT record, and the options given.
func ednsQuery(name string, opts ...dns.EDNS0) []byte {
	q := query(name)
	q.Id = 0
	q.SetEdns0(1232, false)
	o := q.IsEdns0()
	o.Option = append(o.Option, opts...)
	b, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// skipUnderRace skips a test of 0-RTT on the client side under the race
// detector: quic-go writes a connection's peer parameters on its own
// goroutine while a stream opened on the early connection reads them
// (quic-go issue 4303, open), which -race reports however our code
// behaves. make test runs these tests again without -race.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceDetector {
		t.Skip("quic-go races on a client's early (0-RTT) connection (quic-go#4303); make test runs this without -race")
	}
}
