package dnsmsg_test

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// fakeServer is a misbehaving upstream on loopback: each TCP connection,
// or each UDP datagram, goes to a function of the test.
type fakeServer struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn // guarded by mu; closed at cleanup
	wg    sync.WaitGroup
}

// fakeTCP serves each connection with serve, on its own goroutine.
func fakeTCP(t *testing.T, serve func(c net.Conn)) *fakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: l.Addr().String()}
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// fakeUDP answers each datagram with what reply returns for it (nothing
// for an empty list).
func fakeUDP(t *testing.T, reply func(q []byte) [][]byte) *fakeServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: pc.LocalAddr().String()}
	f.wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, r := range reply(append([]byte(nil), buf[:n]...)) {
				pc.WriteTo(r, from)
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		f.wg.Wait()
	})
	return f
}

// writeFrame writes msg to c with its length prefix.
func writeFrame(c net.Conn, msg []byte) error {
	_, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}

// answerWire returns the reply to the wire query q that nameHandler
// gives, with ID id; tc sets the TC bit and leaves the answer out.
func answerWire(t testing.TB, q []byte, id uint16, tc bool) []byte {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		t.Errorf("fake server: %v", err)
		return nil
	}
	r := new(dns.Msg).SetReply(m)
	r.Id = id
	r.Truncated = tc
	if !tc {
		r.Answer = append(r.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{m.Question[0].Name},
		})
	}
	b, err := r.Pack()
	if err != nil {
		t.Errorf("fake server: %v", err)
	}
	return b
}
