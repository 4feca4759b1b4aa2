package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// benchServer starts an echo server whose consumers reply in place, as
// nmecho does: the server path allocates nothing per message.
func benchServer(b *testing.B, workers int) *dnsmsg.Listener {
	return benchServerOn(b, workers, dnsmsg.ListenUDP)
}

func benchServerOn(b testing.TB, workers int, listen func(context.Context, *nm.Manager, string, dnsmsg.ServerConfig) (*dnsmsg.Listener, error)) *dnsmsg.Listener {
	m, err := nm.New(nm.Config{Workers: workers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	l, err := listen(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < workers; i++ {
		go func() {
			for ev := range l.Requests() {
				if ev.Err != nil {
					continue
				}
				dnsmsg.SetResponse(ev.Data)
				ev.Handle.Send(ev.Data)
				ev.Handle.Detach()
			}
		}()
	}
	return l
}

func benchQuery(b *testing.B) []byte {
	p, err := packBenchQuery()
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func packBenchQuery() ([]byte, error) {
	q := new(dns.Msg)
	q.SetQuestion("bench.example.", dns.TypeA)
	return q.Pack()
}

// BenchmarkUDPServerPath measures one request/reply through the UDP server
// path (recvmmsg, filter, handle from the pool, channel, Send, sendmsg),
// driven by a plain blocking client. allocs/op counts the whole process.
func BenchmarkUDPServerPath(b *testing.B) {
	l := benchServer(b, 1)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(l.Addr()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q := benchQuery(b)
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(q); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUDPServerParallel keeps several queries in flight from several
// clients, so the server reads and writes in batches.
func BenchmarkUDPServerParallel(b *testing.B) {
	l := benchServer(b, 2)
	q := benchQuery(b)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(l.Addr()))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		for pb.Next() {
			if _, err := c.Write(q); err != nil {
				b.Error(err)
				return
			}
			if _, err := c.Read(buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUDPClientExchange measures the client path: Conn.Send and one
// Read per reply, against the same server.
func BenchmarkUDPClientExchange(b *testing.B) {
	l := benchServer(b, 1)
	m, err := nm.New(nm.Config{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	c, err := dnsmsg.DialUDP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q := benchQuery(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Send(q); err != nil {
			b.Fatal(err)
		}
		if ev := <-c.Read(); ev.Err != nil {
			b.Fatal(ev.Err)
		}
	}
}

// streamBench is a blocking stream DNS client for benchmarks.
func streamBench(b *testing.B, kind string) (net.Conn, *dnsmsg.Listener) {
	l := benchServerOn(b, 1, streamListen(kind))
	c, err := dialBenchStream(kind, l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, l
}

// streamListen returns the listen function of kind "tcp" or "dot".
func streamListen(kind string) func(context.Context, *nm.Manager, string, dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
	if kind == "dot" {
		return func(ctx context.Context, m *nm.Manager, addr string, cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenTLS(ctx, m, addr, serverTLS, cfg)
		}
	}
	return dnsmsg.ListenTCP
}

// dialBenchStream connects to a "tcp" or "dot" benchmark server.
func dialBenchStream(kind, addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil || kind != "dot" {
		return c, err
	}
	return tls.Client(c, clientTLS), nil
}

// BenchmarkStreamServerPath measures one request/reply through the TCP or
// DoT server path (read, framing, request handle, channel, framed Send),
// driven by a plain blocking client. allocs/op counts the whole process,
// the client's TLS included.
func BenchmarkStreamServerPath(b *testing.B) {
	for _, kind := range []string{"tcp", "dot"} {
		b.Run(kind, func(b *testing.B) {
			c, _ := streamBench(b, kind)
			q := frame(benchQuery(b))
			buf := make([]byte, 512)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(q); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:len(q)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStreamServerPipelined writes 32 queries at once and reads the
// 32 replies: the server frames many messages per read and writes replies
// together. ns/op is per query.
func BenchmarkStreamServerPipelined(b *testing.B) {
	const depth = 32
	for _, kind := range []string{"tcp", "dot"} {
		b.Run(kind, func(b *testing.B) {
			c, _ := streamBench(b, kind)
			one := frame(benchQuery(b))
			q := bytes.Repeat(one, depth)
			buf := make([]byte, len(q))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i%depth != 0 {
					continue
				}
				if _, err := c.Write(q); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
