package dnsmsg_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/rainbowduck/netmgr/dnsmsg"
)

// On a wildcard DoQ listener, a request's LocalAddr is the address the
// client asked, and the answers come from it.
func TestDoQWildcardLocalAddr(t *testing.T) {
	m := newManager(t, 1)
	l, err := dnsmsg.ListenQUIC(context.Background(), m, "0.0.0.0:0", serverTLS, dnsmsg.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan netip.AddrPort, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range l.Requests() {
			if ev.Err != nil {
				continue
			}
			got <- ev.Handle.LocalAddr()
			ev.Handle.Send(asReply(ev.Data)[0])
			ev.Handle.Detach()
		}
	}()
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(ip), l.Addr().Port())
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		tr := &quic.Transport{Conn: pc}
		ctx, cancel := context.WithTimeout(context.Background(), doqBound)
		qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(to), doqClientTLS(), nil)
		cancel()
		if err != nil {
			t.Fatalf("dial %v: %v", to, err)
		}
		rawExchange(t, qc, doqQuery("local.example."))
		if a := <-got; a != to {
			t.Errorf("asked %v: request's LocalAddr %v", to, a)
		}
		qc.CloseWithError(0, "")
		tr.Close()
		pc.Close()
	}
	l.Close()
	<-done
}
