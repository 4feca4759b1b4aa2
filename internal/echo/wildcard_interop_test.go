//go:build linux

package echo

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// TestDigWildcardAnswersFromAddressAsked runs dig against a server on the
// wildcard addresses, asking 127.0.0.2 (and ::1 of [::]): dig drops a reply
// from any other address than the one it asked ("reply from unexpected
// source"), so it only succeeds when the reply leaves from 127.0.0.2.
func TestDigWildcardAnswersFromAddressAsked(t *testing.T) {
	for _, tc := range []struct{ listen, ask string }{
		{"0.0.0.0:0", "127.0.0.2"},
		{"0.0.0.0:0", "127.0.0.3"},
		{"[::]:0", "127.0.0.2"},
		{"[::]:0", "::1"},
	} {
		t.Run(tc.listen+"/"+tc.ask, func(t *testing.T) {
			if tc.ask == "::1" {
				if c, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
					nmtest.SkipOutsideCI(t, "no IPv6 loopback: %v", err)
				} else {
					c.Close()
				}
			}
			s, err := Start(context.Background(), Options{UDP: tc.listen, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			a := addrOf(t, s, "udp")
			out := run(t, "dig", "@"+tc.ask, "-p", strconv.Itoa(int(a.Port())),
				"+notcp", "+tries=1", "+time=5", "wildcard.example.", "A")
			contains(t, out, "status: NOERROR", "flags: qr", "SERVER: "+tc.ask+"#")
			s.Close()
			if st := s.Manager().Stats().Of(nm.UDP); st.Received != 1 || st.Sent != 1 {
				t.Errorf("UDP stats %+v; want 1 received, 1 sent", st)
			}
		})
	}
}
