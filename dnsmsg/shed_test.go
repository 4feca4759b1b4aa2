package dnsmsg_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// expectRcode reads n replies from c and checks that each has rcode and
// an ID from ids, which it removes.
func expectRcode(t *testing.T, c net.Conn, n, rcode int, ids map[uint16]bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
	for i := 0; i < n; i++ {
		r := readFrame(t, c)
		if !dnsmsg.IsResponse(r) || int(r[3]&0x0f) != rcode || !ids[dnsmsg.ID(r)] {
			t.Fatalf("reply %d: id %d rcode %d; want a response with rcode %d to a query sent", i, dnsmsg.ID(r), r[3]&0x0f, rcode)
		}
		m, err := dnsmsg.Parse(r)
		if err != nil || len(m.Question) != 1 || m.Question[0].Name != "shed.example." {
			t.Fatalf("reply %d does not parse with its question: %v", i, err)
		}
		delete(ids, dnsmsg.ID(r))
	}
}

// TestStreamShedsWhenConsumersFallBehind (issue #17): with the consumer
// not taking requests, the listener's queue (4) fills; further queries on
// that connection get REFUSED at once with their question (SERVFAIL when
// configured), counted Shed, and another connection is refused too rather
// than stalled. The queued requests are still delivered afterwards.
func TestStreamShedsWhenConsumersFallBehind(t *testing.T) {
	for _, rcode := range []int{0, dnsmsg.RcodeServFail} {
		t.Run(fmt.Sprint("shed", rcode), func(t *testing.T) { shedScenario(t, rcode) })
	}
}

func shedScenario(t *testing.T, rcode int) {
	forStreams(t, func(t *testing.T, k skind) {
		want := rcode
		if want == 0 {
			want = dnsmsg.RcodeRefused
		}
		m := newManager(t, 1)
		l := k.listen(t, m, dnsmsg.ServerConfig{Queue: 4, Shed: rcode})
		c := k.raw(t, l)
		ids := map[uint16]bool{}
		var queries []byte
		for i := uint16(1); i <= 20; i++ {
			queries = append(queries, frame(queryID(t, "shed.example", i))...)
			ids[i] = true
		}
		c.Write(queries)
		expectRcode(t, c, 16, want, ids)
		other := k.raw(t, l)
		other.Write(frame(queryID(t, "shed.example", 99)))
		expectRcode(t, other, 1, want, map[uint16]bool{99: true})
		if got := m.Stats().Of(k.stat).Shed; got != 17 {
			t.Errorf("Shed = %d; want 17", got)
		}
		// The four queued are delivered, and answered.
		for i := 0; i < 4; i++ {
			ev := nmtest.Next(t, l.Requests(), nmtest.Timeout)
			ev.Handle.Send(asReply(ev.Data)[0])
			ev.Handle.Detach()
		}
		expectRcode(t, c, 4, 0, ids)
		l.Close()
		nmtest.Drain(t, l.Requests(), nmtest.Timeout)
	})
}
