package stream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/certs"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// quiet bounds negative checks (something must not happen); it cannot make
// a correct implementation fail.
const quiet = 50 * time.Millisecond

// kind is one way to make streams: TCP or TLS. Every scenario runs with both.
type kind struct {
	name   string
	listen func(ctx context.Context, m *nm.Manager, addr string, cfg stream.Config) (*stream.Listener, error)
	dial   func(ctx context.Context, m *nm.Manager, addr string, cfg stream.Config) (nm.Handle, error)
	stat   nm.Transport
	// maxConns is the quota every listener of this kind gets: the scenarios
	// run again with a quota of 1.
	maxConns int
}

// sockets returns how many listening sockets a listener of this kind has on
// a manager with the given shards.
func (k kind) sockets(workers int) int {
	if k.maxConns > 0 {
		return 1 // a waiting quota has one acceptor
	}
	return workers
}

var serverTLS, clientTLS = tlsConfigs()

func tlsConfigs() (*tls.Config, *tls.Config) {
	cert, err := certs.Localhost()
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"dot", "echo"}},
		&tls.Config{RootCAs: roots, NextProtos: []string{"echo"}}
}

var kinds = []kind{
	{"tcp", stream.Listen, stream.Dial, nm.TCP, 0},
	{"tls", func(ctx context.Context, m *nm.Manager, addr string, cfg stream.Config) (*stream.Listener, error) {
		return stream.ListenTLS(ctx, m, addr, serverTLS, cfg)
	}, func(ctx context.Context, m *nm.Manager, addr string, cfg stream.Config) (nm.Handle, error) {
		return stream.DialTLS(ctx, m, addr, clientTLS, cfg)
	}, nm.TLS, 0},
}

// forKinds runs a scenario over TCP and TLS.
func forKinds(t *testing.T, fn func(t *testing.T, k kind)) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

// forKindsAndQuota runs a scenario over TCP and TLS, each without a quota
// and with a quota of 1 connection.
func forKindsAndQuota(t *testing.T, fn func(t *testing.T, k kind)) {
	for _, k := range kinds {
		for _, q := range []int{0, 1} {
			k.maxConns = q
			t.Run(fmt.Sprintf("%s/quota%d", k.name, q), func(t *testing.T) { fn(t, k) })
		}
	}
}

func newManager(t testing.TB, workers int) *nm.Manager { return nmtest.Manager(t, workers) }

func (k kind) mustListen(t testing.TB, m *nm.Manager, cfg stream.Config) *stream.Listener {
	t.Helper()
	if cfg.MaxConns == 0 {
		cfg.MaxConns = k.maxConns
	}
	l, err := k.listen(context.Background(), m, "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (k kind) mustDial(t testing.TB, m *nm.Manager, l *stream.Listener, cfg stream.Config) nm.Handle {
	t.Helper()
	h, err := k.dial(context.Background(), m, l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// accept receives the next connection from l.
func accept(t testing.TB, l *stream.Listener) nm.Handle {
	t.Helper()
	ev := nmtest.Next(t, l.Conns(), nmtest.Timeout)
	if ev.Err != nil {
		t.Fatalf("accept: %v", ev.Err)
	}
	return ev.Handle
}

// echo serves one connection: it sends back every chunk it reads, until
// the final event, which it returns.
func echo(h nm.Handle) error {
	for ev := range h.Read() {
		if ev.Err != nil {
			return ev.Err
		}
		if err := h.Send(ev.Data); err != nil {
			return err
		}
	}
	return errors.New("channel closed without a final event")
}

// echoServer accepts connections and echoes on each until the listener's
// channel closes. The returned function waits for everything to end.
func echoServer(l *stream.Listener) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		conns := make(chan struct{}, 1024)
		n := 0
		for ev := range l.Conns() {
			if ev.Err != nil {
				continue
			}
			n++
			go func(h nm.Handle) {
				echo(h)
				h.Detach()
				conns <- struct{}{}
			}(ev.Handle)
		}
		for ; n > 0; n-- {
			<-conns
		}
	}()
	return func() { <-done }
}

// readN reads from h until it has n bytes.
func readN(t testing.TB, h nm.Handle, n int) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		ev := nmtest.Next(t, h.Read(), nmtest.Timeout)
		if ev.Err != nil {
			t.Fatalf("after %d of %d bytes: %v", len(got), n, ev.Err)
		}
		got = append(got, ev.Data...)
	}
	return got
}

// tlsClient wraps a plain connection in a TLS client for benchmarks.
func tlsClient(c net.Conn) net.Conn {
	conf := clientTLS.Clone()
	conf.ServerName = "localhost"
	return tls.Client(c, conf)
}
