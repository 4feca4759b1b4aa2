package transport

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func TestListenUDPReusePortSharesPort(t *testing.T) {
	conns, err := ListenUDP(context.Background(), "127.0.0.1:0", 3, ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	distinct := map[*net.UDPConn]bool{}
	for _, c := range conns {
		distinct[c] = true
	}
	want := 1 // shared by the shards
	if ReusePortSupported {
		want = 3
	}
	if len(conns) != 3 || len(distinct) != want {
		t.Fatalf("got %d sockets, %d distinct; want 3, %d distinct", len(conns), len(distinct), want)
	}
	port := AddrPort(conns[0].LocalAddr()).Port()
	for i, c := range conns {
		if p := AddrPort(c.LocalAddr()).Port(); p != port || p == 0 {
			t.Errorf("socket %d on port %d; want %d", i, p, port)
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			if err != nil {
				// transport's tests cannot use nmtest (it imports us).
				if os.Getenv("CI") != "" {
					t.Fatalf("in CI: cannot bind %s: %v", addr, err)
				}
				t.Skipf("cannot bind %s: %v", addr, err)
			}
			defer srv.Close()
			cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			const n = 10
			out, err := NewBatch(cli, n, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range out.Msgs {
				out.Msgs[i].Buf = fmt.Appendf(nil, "message %d", i)
			}
			if err := out.Write(n); err != nil {
				t.Fatal(err)
			}
			for i := range out.Msgs {
				if out.Msgs[i].Err != nil {
					t.Fatalf("message %d: %v", i, out.Msgs[i].Err)
				}
			}
			in, err := NewBatch(srv, 4, 64)
			if err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			got := 0
			for got < n {
				k, err := in.Read()
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range in.Msgs[:k] {
					if want := fmt.Sprintf("message %d", got); string(m.Buf[:m.N]) != want || m.Truncated {
						t.Errorf("got %q (truncated %v); want %q", m.Buf[:m.N], m.Truncated, want)
					}
					if m.Addr != AddrPort(cli.LocalAddr()) {
						t.Errorf("from %v; want %v", m.Addr, cli.LocalAddr())
					}
					got++
				}
			}
			// Replies by address through a batch on the unconnected socket.
			out2, _ := NewBatch(srv, 1, 0)
			out2.Msgs[0].Buf, out2.Msgs[0].Addr = []byte("reply"), AddrPort(cli.LocalAddr())
			if err := out2.Write(1); err != nil || out2.Msgs[0].Err != nil {
				t.Fatal(err, out2.Msgs[0].Err)
			}
			buf := make([]byte, 16)
			cli.SetReadDeadline(time.Now().Add(10 * time.Second))
			if k, err := cli.Read(buf); err != nil || string(buf[:k]) != "reply" {
				t.Fatalf("client read %q, %v", buf[:k], err)
			}
		})
	}
}

func TestBatchTruncated(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.Write(make([]byte, 100))
	in, _ := NewBatch(srv, 1, 50)
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := in.Read(); err != nil || n != 1 || !in.Msgs[0].Truncated {
		t.Fatalf("Read = %d, %v, truncated %v; want 1, nil, true", n, err, in.Msgs[0].Truncated)
	}
}

func TestPinThread(t *testing.T) {
	cpus := AllowedCPUs()
	if len(cpus) == 0 {
		t.Skip("platform reports no CPU affinity")
	}
	done := make(chan error)
	go func() {
		// A fresh goroutine locked to its thread, so the pin dies with it.
		lockThread()
		done <- PinThread(cpus[len(cpus)-1])
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func closeAll(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}
