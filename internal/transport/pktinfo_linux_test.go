package transport

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// wildcard binds a UDP socket to the wildcard address of network ("udp4":
// 0.0.0.0, "udp": dual-stack [::]) on loopback's side of the test.
func wildcard(t *testing.T, network string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client opens an unconnected socket on the loopback address of to's
// family, so that it sees where replies come from.
func client(t *testing.T, to netip.Addr) *net.UDPConn {
	t.Helper()
	from := netip.MustParseAddr("127.0.0.1")
	if to.Is6() {
		from = netip.IPv6Loopback()
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
	if err != nil {
		if os.Getenv("CI") == "" && to.Is6() {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func loopbackIndex(t *testing.T) int {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Index
		}
	}
	t.Fatal("no loopback interface")
	return 0
}

// TestBatchPktinfoWildcard checks that a wildcard socket reports each
// datagram's destination and interface, and that a reply written with that
// Local leaves from it: the address the client asked.
func TestBatchPktinfoWildcard(t *testing.T) {
	lo := loopbackIndex(t)
	for _, tc := range []struct {
		network string
		dsts    []string
	}{
		{"udp4", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}},
		{"udp", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"}},
	} {
		srv := wildcard(t, tc.network)
		srv.SetDeadline(time.Now().Add(10 * time.Second))
		port := AddrPort(srv.LocalAddr()).Port()
		in, err := NewBatch(srv, 4, 64)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := NewBatch(srv, 1, 0)
		for _, d := range tc.dsts {
			dst := netip.AddrPortFrom(netip.MustParseAddr(d), port)
			cli := client(t, dst.Addr())
			if _, err := cli.WriteToUDPAddrPort([]byte("q"), dst); err != nil {
				t.Fatal(err)
			}
			if n, err := in.Read(); err != nil || n != 1 {
				t.Fatalf("%s: Read = %d, %v", tc.network, n, err)
			}
			m := in.Msgs[0]
			if m.Local != dst.Addr() || m.IfIndex != lo {
				t.Errorf("%s to %v: Local %v, IfIndex %d; want %v, %d", tc.network, dst, m.Local, m.IfIndex, dst.Addr(), lo)
			}
			out.Msgs[0] = Message{Buf: []byte("r"), Addr: m.Addr, Local: m.Local, IfIndex: m.IfIndex}
			if err := out.Write(1); err != nil || out.Msgs[0].Err != nil {
				t.Fatal(err, out.Msgs[0].Err)
			}
			buf := make([]byte, 8)
			_, from, err := cli.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if from.Addr().Unmap() != dst.Addr() || from.Port() != port {
				t.Errorf("%s: reply to a query for %v came from %v", tc.network, dst, from)
			}
		}
	}
}

// TestBatchPktinfoAllocs checks that reading with control data and writing
// with a source address allocate nothing.
func TestBatchPktinfoAllocs(t *testing.T) {
	srv := wildcard(t, "udp")
	srv.SetDeadline(time.Now().Add(10 * time.Second))
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), AddrPort(srv.LocalAddr()).Port())
	cli := client(t, dst.Addr())
	in, _ := NewBatch(srv, 4, 64)
	out, _ := NewBatch(srv, 1, 0)
	q, buf := []byte("q"), make([]byte, 8)
	var failed error
	allocs := testing.AllocsPerRun(100, func() {
		cli.WriteToUDPAddrPort(q, dst)
		if _, err := in.Read(); err != nil {
			failed = err
			return
		}
		m := &in.Msgs[0]
		o := &out.Msgs[0]
		o.Buf, o.Addr, o.Local, o.IfIndex = q, m.Addr, m.Local, m.IfIndex
		if err := out.Write(1); err != nil {
			failed = err
			return
		}
		cli.ReadFromUDPAddrPort(buf)
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per round trip; want 0", allocs)
	}
}

// TestEncodePktinfoMismatch checks that an IPv6 source on an IPv4 socket
// is left to the kernel rather than panicking.
func TestEncodePktinfoMismatch(t *testing.T) {
	oob := make([]byte, oobSize)
	m := Message{Local: netip.IPv6Loopback()}
	if n := encodePktinfo(oob, &m, false); n != 0 {
		t.Errorf("encodePktinfo(::1 on AF_INET) = %d; want 0", n)
	}
}

// BenchmarkBatchSourced measures one datagram read from a wildcard socket
// and answered through a Batch, with and without a source address.
func BenchmarkBatchSourced(b *testing.B) {
	for _, sourced := range []bool{false, true} {
		b.Run(fmt.Sprintf("sourced=%v", sourced), func(b *testing.B) {
			srv, err := net.ListenUDP("udp4", &net.UDPAddr{})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			cli, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), AddrPort(srv.LocalAddr()).Port())
			in, _ := NewBatch(srv, 1, 512)
			out, _ := NewBatch(srv, 1, 0)
			q, buf := make([]byte, 64), make([]byte, 512)
			b.ReportAllocs()
			for b.Loop() {
				cli.WriteToUDPAddrPort(q, dst)
				if _, err := in.Read(); err != nil {
					b.Fatal(err)
				}
				m, o := &in.Msgs[0], &out.Msgs[0]
				o.Buf, o.Addr = q, m.Addr
				if sourced {
					o.Local = m.Local
				}
				if err := out.Write(1); err != nil {
					b.Fatal(err)
				}
				cli.ReadFromUDPAddrPort(buf)
			}
		})
	}
}
