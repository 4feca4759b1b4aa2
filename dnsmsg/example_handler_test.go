package dnsmsg_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// A small authoritative server: one zone, answered from a map, over UDP and
// TCP with one handler. Serve runs the workers, answers FORMERR for what
// does not parse and SERVFAIL for a handler that panics.
func ExampleServe() {
	zone := map[string]net.IP{
		"www.example.org.":  net.IPv4(192, 0, 2, 1),
		"mail.example.org.": net.IPv4(192, 0, 2, 2),
	}
	answer := dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		q, err := r.Msg()
		if err != nil {
			return // FORMERR
		}
		a := new(dns.Msg).SetReply(q)
		a.Authoritative = true
		if ip, ok := zone[q.Question[0].Name]; ok && q.Question[0].Qtype == dns.TypeA {
			a.Answer = append(a.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600},
				A:   ip,
			})
		} else if !ok {
			a.Rcode = dns.RcodeNameError
		}
		r.Reply(a) // truncated to what the client takes over UDP
	})

	ctx := context.Background()
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	udp, err := dnsmsg.ListenUDP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	tcp, err := dnsmsg.ListenTCP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	go dnsmsg.Serve(ctx, udp.Requests(), answer, dnsmsg.ServeConfig{})
	go dnsmsg.Serve(ctx, tcp.Requests(), answer, dnsmsg.ServeConfig{})

	for _, name := range []string{"www.example.org.", "nope.example.org."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		for _, c := range []*dns.Client{{Net: "udp"}, {Net: "tcp"}} {
			addr := udp.Addr().String()
			if c.Net == "tcp" {
				addr = tcp.Addr().String()
			}
			r, _, err := c.Exchange(q, addr)
			if err != nil {
				panic(err)
			}
			fmt.Println(c.Net, name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	// Output:
	// udp www.example.org. NOERROR 1
	// tcp www.example.org. NOERROR 1
	// udp nope.example.org. NXDOMAIN 0
	// tcp nope.example.org. NXDOMAIN 0
}

// Moving a github.com/miekg/dns server: the dns.ServeMux and its handlers
// stay as they are; MiekgHandler serves them on this package's listeners,
// DNS over TLS and HTTPS included (here UDP and TCP).
func ExampleMiekgHandler() {
	mux := dns.NewServeMux()
	mux.HandleFunc("example.org.", func(w dns.ResponseWriter, q *dns.Msg) {
		a := new(dns.Msg).SetReply(q)
		a.Answer = append(a.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
			Txt: []string{"served over " + w.RemoteAddr().Network()},
		})
		w.WriteMsg(a)
	})

	// Before: dns.ListenAndServe(addr, "udp", mux) and the same for "tcp".
	ctx := context.Background()
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	udp, err := dnsmsg.ListenUDP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	tcp, err := dnsmsg.ListenTCP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	go dnsmsg.Serve(ctx, udp.Requests(), dnsmsg.MiekgHandler(mux), dnsmsg.ServeConfig{})
	go dnsmsg.Serve(ctx, tcp.Requests(), dnsmsg.MiekgHandler(mux), dnsmsg.ServeConfig{})

	q := new(dns.Msg)
	q.SetQuestion("www.example.org.", dns.TypeTXT)
	for _, c := range []*dns.Client{{Net: "udp", Timeout: 5 * time.Second}, {Net: "tcp", Timeout: 5 * time.Second}} {
		addr := udp.Addr().String()
		if c.Net == "tcp" {
			addr = tcp.Addr().String()
		}
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			panic(err)
		}
		fmt.Println(r.Answer[0].(*dns.TXT).Txt[0])
	}
	// Output:
	// served over udp
	// served over tcp
}

// Per-listener statistics: each listener counts on its own, under the name
// its configuration gives, with the latency of its replies.
func ExampleServerConfig_name() {
	ctx := context.Background()
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	auth, err := dnsmsg.ListenUDP(ctx, m, "127.0.0.1:0", dnsmsg.ServerConfig{Name: "auth"})
	if err != nil {
		panic(err)
	}
	go dnsmsg.Serve(ctx, auth.Requests(), dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		q, _ := r.Msg()
		r.Reply(new(dns.Msg).SetReply(q))
	}), dnsmsg.ServeConfig{})

	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	for range 3 {
		q := new(dns.Msg).SetQuestion("example.org.", dns.TypeSOA)
		if _, _, err := c.Exchange(q, auth.Addr().String()); err != nil {
			panic(err)
		}
	}
	// A reply counts as sent once its write returns, which can be just
	// after the client has it.
	for deadline := time.Now().Add(5 * time.Second); auth.Stats().Sent < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	for _, e := range m.Endpoints() {
		fmt.Println(e.Transport, e.Role, e.Name, e.Received, e.Sent, e.Latency.Count())
	}
	// Output:
	// udp listener auth 3 3 3
}
