package dnsmsg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// BenchmarkDoQServerOnly is BenchmarkServerOnly over DNS over QUIC: one
// blocking exchange per stream on one connection, with the client in
// another process, so that allocs/op counts the server's allocations
// alone, quic-go's included.
func BenchmarkDoQServerOnly(b *testing.B) {
	l := benchServerOn(b, 1, func(ctx context.Context, m *nm.Manager, addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
		return dnsmsg.ListenQUIC(ctx, m, addr, serverTLS, cfg)
	})
	c := startBenchClient(b, "doq", l.Addr().String())
	c.run(b, 1) // the handshake
	b.ReportAllocs()
	b.ResetTimer()
	c.run(b, b.N)
}

// TestDoQServerOnlyClient checks the harness of BenchmarkDoQServerOnly.
func TestDoQServerOnlyClient(t *testing.T) {
	l := benchServerOn(t, 1, func(ctx context.Context, m *nm.Manager, addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
		return dnsmsg.ListenQUIC(ctx, m, addr, serverTLS, cfg)
	})
	c := startBenchClient(t, "doq", l.Addr().String())
	c.run(t, 3)
}

// dialDoQBenchClient is the DoQ client of the benchmark's client process.
func dialDoQBenchClient(addr string, q []byte) (func() error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc := clientTLS.Clone()
	tc.NextProtos = []string{dnsmsg.ALPNDoQ}
	qc, err := quic.DialAddr(ctx, addr, tc, nil)
	if err != nil {
		return nil, err
	}
	q = append([]byte(nil), q...)
	q[0], q[1] = 0, 0
	framed := frame(q)
	buf := make([]byte, 0, 512)
	return func() error {
		str, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			return err
		}
		str.SetDeadline(time.Now().Add(10 * time.Second)) // a lost reply fails, not hangs
		if _, err := str.Write(framed); err != nil {
			return err
		}
		str.Close()
		buf = buf[:0]
		for {
			n, err := str.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				break
			}
		}
		if len(buf) != len(framed) || buf[2] != 0 || buf[3] != 0 || buf[4]&0x80 == 0 {
			return errors.New("not the reply")
		}
		return nil
	}, nil
}
