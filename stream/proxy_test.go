package stream_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/proxyproto"
	"github.com/rainbowduck/netmgr/stream"
)

// TestProxyHeaderOnStreams: over TCP and TLS (header before TLS and inside
// it), the accepted handle reports the header's addresses, keeps the
// socket's as the real ones, passes the TLVs through, and the bytes after
// the header are the stream's.
func TestProxyHeaderOnStreams(t *testing.T) {
	src := netip.MustParseAddrPort("[2001:db8::7]:40000")
	dst := netip.MustParseAddrPort("[2001:db8::1]:853")
	hdr, err := proxyproto.Header{Command: proxyproto.Proxy, Source: src, Destination: dst,
		TLVs: []proxyproto.TLV{{Type: 0xe0, Value: []byte("tenant-7")}}}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		for _, inTLS := range []bool{false, true} {
			if inTLS && k.stat != kinds[1].stat {
				continue
			}
			name := k.name
			if inTLS {
				name += "/inside-tls"
			}
			t.Run(name, func(t *testing.T) {
				m := newManager(t, 1)
				l := k.mustListen(t, m, stream.Config{Proxy: &proxyproto.Policy{}, ProxyInTLS: inTLS})
				h := k.mustDial(t, m, l, stream.Config{ProxyHeader: hdr, ProxyInTLS: inTLS})
				defer h.Detach()
				h.Send([]byte("hello"))
				sh := accept(t, l)
				defer sh.Detach()
				if sh.PeerAddr() != src || sh.LocalAddr() != dst {
					t.Errorf("PeerAddr %v, LocalAddr %v; want %v, %v", sh.PeerAddr(), sh.LocalAddr(), src, dst)
				}
				if sh.RealPeerAddr() != h.LocalAddr() || sh.RealLocalAddr() != h.PeerAddr() {
					t.Errorf("real addresses %v, %v; want %v, %v", sh.RealPeerAddr(), sh.RealLocalAddr(), h.LocalAddr(), h.PeerAddr())
				}
				ph, ok := stream.ProxyHeader(sh)
				if !ok || len(ph.TLVs) != 1 || !bytes.Equal(ph.TLVs[0].Value, []byte("tenant-7")) {
					t.Errorf("ProxyHeader = %+v, %v; want the TLV", ph, ok)
				}
				if ev := nmtest.Next(t, sh.Read(), nmtest.Timeout); ev.Err != nil || string(ev.Data) != "hello" {
					t.Errorf("first data %q, %v; want %q", ev.Data, ev.Err, "hello")
				}
			})
		}
	}
}
