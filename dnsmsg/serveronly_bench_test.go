package dnsmsg_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// benchClientEnv, set to "kind address", turns the test binary into the
// client of BenchmarkServerOnly (see TestMain): it reads a count from
// standard input, does that many exchanges one after another, and answers
// "ok" on standard output, until standard input ends.
const benchClientEnv = "NMBENCH_CLIENT"

// benchCertEnv carries the server's certificate (base64 DER), which the
// client process trusts: certificates are made anew in every process.
const benchCertEnv = "NMBENCH_CERT"

var serverOnlyKinds = []string{"udp", "udp-burst", "tcp", "dot", "doh-get", "doh-post"}

// udpBurst is how many queries the "udp-burst" client sends before it
// reads their replies: one op of that kind is udpBurst queries.
const udpBurst = 16

// BenchmarkServerOnly measures the server path with its client in another
// process, so that allocs/op counts the server's allocations alone: per
// query over UDP, TCP, DoT and DoH (GET and POST), each a blocking round
// trip on one connection, and per burst of udpBurst UDP queries sent
// before their replies are read ("udp-burst"). The client is the test
// binary itself. syscalls/q is the server's reads and writes (system calls,
// from the manager's counters) per query, where the transport counts them.
func BenchmarkServerOnly(b *testing.B) {
	for _, kind := range serverOnlyKinds {
		b.Run(kind, func(b *testing.B) {
			addr, m := serverOnlyAddr(b, kind)
			c := startBenchClient(b, kind, addr)
			c.run(b, 1) // the handshakes and HTTP/2 settings
			before := serverOnlyTotals(m, kind)
			b.ReportAllocs()
			b.ResetTimer()
			c.run(b, b.N)
			b.StopTimer()
			after := serverOnlyTotals(m, kind)
			if calls := after.Reads + after.Writes - before.Reads - before.Writes; calls > 0 {
				queries := b.N
				if kind == "udp-burst" {
					queries *= udpBurst
				}
				b.ReportMetric(float64(calls)/float64(queries), "syscalls/q")
			}
		})
	}
}

// serverOnlyTotals returns the counters of kind's transport, or zeros
// where the manager is not at hand (m nil).
func serverOnlyTotals(m *nm.Manager, kind string) nm.Totals {
	if m == nil {
		return nm.Totals{}
	}
	t := nm.UDP
	switch kind {
	case "tcp":
		t = nm.TCP
	case "dot":
		t = nm.TLS
	}
	return m.Stats().Of(t)
}

// TestServerOnlyClient checks the harness BenchmarkServerOnly stands on:
// on every transport a client in another process gets replies to its
// queries from the server in this one.
func TestServerOnlyClient(t *testing.T) {
	for _, kind := range serverOnlyKinds {
		t.Run(kind, func(t *testing.T) {
			addr, _ := serverOnlyAddr(t, kind)
			c := startBenchClient(t, kind, addr)
			c.run(t, 3)
			c.run(t, 5)
		})
	}
}

// serverOnlyAddr starts an echo server for kind and returns its address
// and, but for DoH, its manager.
func serverOnlyAddr(tb testing.TB, kind string) (string, *nm.Manager) {
	var m *nm.Manager
	keep := func(listen func(context.Context, *nm.Manager, string, dnsmsg.ServerConfig) (*dnsmsg.Listener, error)) func(context.Context, *nm.Manager, string, dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
		return func(ctx context.Context, mgr *nm.Manager, addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			m = mgr
			return listen(ctx, mgr, addr, cfg)
		}
	}
	switch kind {
	case "udp", "udp-burst":
		return benchServerOn(tb, 1, keep(dnsmsg.ListenUDP)).Addr().String(), m
	case "tcp", "dot":
		return benchServerOn(tb, 1, keep(streamListen(kind))).Addr().String(), m
	default:
		return dohBenchServer(tb).Addr().String(), nil
	}
}

// benchClient is the parent's end of a client process.
type benchClient struct {
	in  io.Writer
	out *bufio.Reader
}

func startBenchClient(tb testing.TB, kind, addr string) *benchClient {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchClientEnv+"="+kind+" "+addr,
		benchCertEnv+"="+base64.StdEncoding.EncodeToString(serverTLS.Certificates[0].Leaf.Raw))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	// Cleanups run last first: the client ends before the server closes.
	tb.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			tb.Errorf("benchmark client: %v", err)
		}
	})
	return &benchClient{in: in, out: bufio.NewReader(out)}
}

// run has the client do n exchanges and waits until they are done.
func (c *benchClient) run(tb testing.TB, n int) {
	var num [24]byte
	if _, err := c.in.Write(append(strconv.AppendInt(num[:0], int64(n), 10), '\n')); err != nil {
		tb.Fatal(err)
	}
	line, err := c.out.ReadSlice('\n')
	if err != nil || string(line) != "ok\n" {
		tb.Fatalf("benchmark client: %q, %v", line, err)
	}
}

// runBenchClient is the client process: spec is "kind address".
func runBenchClient(spec string) int {
	kind, addr, _ := strings.Cut(spec, " ")
	err := trustBenchCert(os.Getenv(benchCertEnv))
	var exchange func() error
	if err == nil {
		exchange, err = dialBenchClient(kind, addr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchmark client:", err)
		return 1
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(in.Text())
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchmark client:", err)
			return 1
		}
		for range n {
			if err := exchange(); err != nil {
				fmt.Fprintf(os.Stderr, "benchmark client: %s: %v\n", kind, err)
				return 1
			}
		}
		if _, err := os.Stdout.WriteString("ok\n"); err != nil {
			return 1
		}
	}
	return 0
}

// trustBenchCert makes clientTLS trust the parent's server certificate.
func trustBenchCert(b64 string) error {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	clientTLS.RootCAs = x509.NewCertPool()
	clientTLS.RootCAs.AddCert(cert)
	return nil
}

// dialBenchClient connects to addr and returns a function that does one
// blocking exchange and checks that a reply came.
func dialBenchClient(kind, addr string) (func() error, error) {
	q, err := packBenchQuery()
	if err != nil {
		return nil, err
	}
	isReply := func(b []byte) error {
		if len(b) != len(q) || b[0] != q[0] || b[1] != q[1] || b[2]&0x80 == 0 {
			return fmt.Errorf("not the reply: % x", b)
		}
		return nil
	}
	switch kind {
	case "udp":
		c, err := net.Dial("udp", addr)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, 512)
		return func() error {
			if _, err := c.Write(q); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost reply fails, not hangs
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			return isReply(buf[:n])
		}, nil
	case "udp-burst":
		return udpBurstClient(addr, q, isReply)
	case "tcp", "dot":
		c, err := dialBenchStream(kind, addr)
		if err != nil {
			return nil, err
		}
		framed := frame(q)
		buf := make([]byte, len(framed))
		return func() error {
			if _, err := c.Write(framed); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			return isReply(buf[2:])
		}, nil
	case "doh-get", "doh-post":
		lc, err := newLeanH2(addr, q, kind == "doh-post")
		if err != nil {
			return nil, err
		}
		return lc.exchange, nil
	case "doq":
		return dialDoQBenchClient(addr, q)
	}
	return nil, errors.New("unknown kind " + kind)
}

// udpBurstClient returns an exchange that sends udpBurst queries, then
// reads their replies.
func udpBurstClient(addr string, q []byte, isReply func([]byte) error) (func() error, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	return func() error {
		for range udpBurst {
			if _, err := c.Write(q); err != nil {
				return err
			}
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a lost reply fails, not hangs
		for range udpBurst {
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			if err := isReply(buf[:n]); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
