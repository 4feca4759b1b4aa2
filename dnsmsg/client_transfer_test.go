package dnsmsg_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// zoneMessages returns an AXFR reply for zone in n messages: the SOA,
// two A records per message, the SOA again at the end.
func zoneMessages(q *dns.Msg, n int) []*dns.Msg {
	zone := q.Question[0].Name
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + zone, Mbox: "admin." + zone, Serial: 2026, Refresh: 1, Retry: 1, Expire: 1, Minttl: 1}
	var msgs []*dns.Msg
	for i := range n {
		m := new(dns.Msg).SetReply(q)
		if i == 0 {
			m.Answer = append(m.Answer, soa)
		}
		for j := range 2 {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: fmt.Sprintf("h%d-%d.%s", i, j, zone), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(i)),
			})
		}
		if i == n-1 {
			m.Answer = append(m.Answer, soa)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

var axfrHandler = dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
	q, err := r.Msg()
	if err != nil {
		return
	}
	if q.Question[0].Qtype != dns.TypeAXFR {
		nameHandler(r)
		return
	}
	for _, m := range zoneMessages(q, 5) {
		if r.Reply(m) != nil {
			return
		}
	}
})

// TestClientTransfer: an AXFR of 5 messages over TCP and DoT arrives
// message by message, with the caller's ID, then ends with nm.ErrEOF.
func TestClientTransfer(t *testing.T) {
	for _, kind := range []string{"tcp", "dot"} {
		t.Run(kind, func(t *testing.T) {
			m := nmtest.Manager(t, 1)
			s := serveKind(t, m, kind, axfrHandler)
			c := testClient(t, m, dnsmsg.ClientConfig{})
			q := question("zone.example.", dns.TypeAXFR)
			q.Id = 99
			ch, err := c.Transfer(longCtx(t), clientURI(kind, s), q)
			if err != nil {
				t.Fatal(err)
			}
			res := nmtest.Drain(t, ch, nmtest.Timeout)
			if !errors.Is(res.Final, nm.ErrEOF) || len(res.Data) != 5 {
				t.Fatalf("transfer: %d messages then %v; want 5 then nm.ErrEOF", len(res.Data), res.Final)
			}
			for i, b := range res.Data {
				r, err := dnsmsg.Parse(b)
				if err != nil || r.Id != 99 || len(r.Answer) < 2 {
					t.Errorf("message %d: %v, %v; want ID 99 and records", i, r, err)
				}
			}
		})
	}
}

// TestClientTransferFaults: an upstream that stops in the middle ends the
// transfer with ErrTransfer; one that refuses with REFUSED gives that
// message then ErrTransfer; a receiver that stops reading cancels its
// context and gets the final event at once.
func TestClientTransferFaults(t *testing.T) {
	m := nmtest.Manager(t, 1)
	f := fakeTCP(t, func(c net.Conn) {
		b, err := readFrameErr(c)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		q.Unpack(b)
		switch q.Question[0].Name {
		case "refused.example.":
			r := new(dns.Msg).SetRcode(q, dns.RcodeRefused)
			p, _ := r.Pack()
			writeFrame(c, p)
		case "cut.example.":
			for _, r := range zoneMessages(q, 5)[:2] {
				p, _ := r.Pack()
				writeFrame(c, p)
			}
			c.Close()
		default: // endless
			for _, r := range zoneMessages(q, 1000)[:999] {
				p, _ := r.Pack()
				if writeFrame(c, p) != nil {
					return
				}
			}
		}
	})
	c := testClient(t, m, dnsmsg.ClientConfig{})
	uri := "tcp://" + f.addr
	for _, tc := range []struct {
		name string
		n    int
	}{{"refused.example.", 1}, {"cut.example.", 2}} {
		ch, err := c.Transfer(longCtx(t), uri, question(tc.name, dns.TypeAXFR))
		if err != nil {
			t.Fatal(err)
		}
		res := nmtest.Drain(t, ch, nmtest.Timeout)
		if !errors.Is(res.Final, dnsmsg.ErrTransfer) || len(res.Data) != tc.n {
			t.Errorf("%s: %d messages then %v; want %d then ErrTransfer", tc.name, len(res.Data), res.Final, tc.n)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Transfer(ctx, uri, question("big.example.", dns.TypeAXFR))
	if err != nil {
		t.Fatal(err)
	}
	nmtest.Next(t, ch, nmtest.Timeout)
	cancel()
	res := nmtest.Drain(t, ch, nmtest.Timeout)
	if !errors.Is(res.Final, context.Canceled) {
		t.Errorf("canceled transfer ended with %v; want context.Canceled", res.Final)
	}
}
