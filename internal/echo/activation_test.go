package echo

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/miekg/dns"
)

// passed opens a UDP socket and a TCP listener on loopback and returns
// copies of their descriptors, as a parent would pass them on.
func passed(t *testing.T) []*os.File {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f1, err := pc.File()
	if err != nil {
		t.Fatal(err)
	}
	f2, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	return []*os.File{f1, f2}
}

// fdsOf maps socket activation's descriptors 3, 4, ... to files.
func fdsOf(files []*os.File) func(fd uintptr, name string) *os.File {
	return func(fd uintptr, name string) *os.File {
		if i := int(fd) - listenFDsStart; i >= 0 && i < len(files) {
			return files[i]
		}
		return nil
	}
}

func TestActivatedByNameAndType(t *testing.T) {
	for _, names := range []string{"udp:tcp", "", "a.socket:b.socket"} {
		socks, err := activated("42", "2", names, 42, fdsOf(passed(t)))
		if err != nil {
			t.Fatalf("names %q: %v", names, err)
		}
		if len(socks) != 2 || len(socks["udp"].PacketConns) != 1 || len(socks["tcp"].Listeners) != 1 {
			t.Errorf("names %q: got %v; want one udp and one tcp socket", names, socks)
		}
		closeSockets(socks)
	}
	socks, err := activated("42", "2", "dot:doh", 42, fdsOf(passed(t)))
	if err == nil {
		closeSockets(socks)
		t.Error("a datagram socket named dot was accepted")
	}
}

func TestActivatedNotForUs(t *testing.T) {
	for _, tc := range []struct{ pid, fds string }{{"41", "2"}, {"42", ""}} {
		if socks, err := activated(tc.pid, tc.fds, "", 42, nil); socks != nil || err != nil {
			t.Errorf("LISTEN_PID=%s LISTEN_FDS=%s in process 42: %v, %v; want nothing", tc.pid, tc.fds, socks, err)
		}
	}
	if _, err := activated("42", "x", "", 42, nil); err == nil {
		t.Error("LISTEN_FDS=x accepted")
	}
}

// TestServesPassedSockets checks that the server answers on sockets passed
// in, with no address of its own.
func TestServesPassedSockets(t *testing.T) {
	socks, err := activated("42", "2", "udp:tcp", 42, fdsOf(passed(t)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), Options{Sockets: socks, Workers: 2})
	if err != nil {
		closeSockets(socks)
		t.Fatal(err)
	}
	defer s.Close()
	for _, net := range []string{"udp", "tcp"} {
		a, ok := s.Addr(net)
		if !ok {
			t.Fatalf("no %s listener", net)
		}
		q := new(dns.Msg)
		q.SetQuestion("passed.example.", dns.TypeA)
		if r, _, err := (&dns.Client{Net: net}).Exchange(q, a.String()); err != nil || !r.Response {
			t.Errorf("%s query to %v: %v, %v", net, a, r, err)
		}
	}
}
