package dnsmsg_test

import (
	"context"
	"fmt"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// A DNS server over UDP that echoes each query as its answer.
func ExampleListenUDP() {
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	l, err := dnsmsg.ListenUDP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	go func() {
		for ev := range l.Requests() {
			if ev.Err != nil {
				continue
			}
			dnsmsg.SetResponse(ev.Data) // reply in place: the handle owns Data
			ev.Handle.Send(ev.Data)
			ev.Handle.Detach()
		}
	}()

	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := dnsmsg.Exchange(ctx, m, l.Addr().String(), q)
	fmt.Println(r.Response, r.Question[0].Name, err)
	// Output: true example.org. <nil>
}

// A DNS server over TCP, and a client that pipelines three queries on one
// connection, then reads the three replies.
func ExampleListenTCP() {
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	l, err := dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	go func() {
		for ev := range l.Requests() { // the same loop as for UDP
			if ev.Err != nil {
				continue
			}
			dnsmsg.SetResponse(ev.Data)
			ev.Handle.Send(ev.Data) // the length prefix is added
			ev.Handle.Detach()
		}
	}()

	c, err := dnsmsg.DialTCP(context.Background(), m, l.Addr().String(), dnsmsg.ClientConfig{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for _, name := range []string{"a.example.", "b.example.", "c.example."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		b, _ := q.Pack()
		c.Send(b)
	}
	for i := 0; i < 3; i++ {
		ev := <-c.Read() // one reply per Read
		r, _ := dnsmsg.Parse(ev.Data)
		fmt.Println(r.Question[0].Name)
	}
	// Unordered output:
	// a.example.
	// b.example.
	// c.example.
}

// A DNS over HTTPS server with two endpoints, here over cleartext HTTP/2
// (ListenHTTPS is the same with a tls.Config), and a client that asks each
// with GET.
func ExampleListenHTTP() {
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	eps, err := dnsmsg.NewEndpoints(0, "/dns-query", "/family")
	if err != nil {
		panic(err)
	}
	l, err := dnsmsg.ListenHTTP(context.Background(), m, "127.0.0.1:0", eps, dnsmsg.HTTPConfig{})
	if err != nil {
		panic(err)
	}
	for _, path := range eps.Paths() {
		go func() {
			for ev := range eps.Requests(path) { // the same loop as for UDP
				if ev.Err != nil {
					continue
				}
				dnsmsg.SetResponse(ev.Data)
				ev.Handle.Send(ev.Data) // the HTTP response; it ends the stream
				ev.Handle.Detach()
			}
		}()
	}
	for _, path := range eps.Paths() {
		c, err := dnsmsg.DialHTTPS(context.Background(), m, "http://"+l.Addr().String()+path, nil, dnsmsg.ClientConfig{HTTPGet: true})
		if err != nil {
			panic(err)
		}
		q := new(dns.Msg)
		q.SetQuestion("doh.example.", dns.TypeA)
		r, err := c.Exchange(context.Background(), q)
		if err != nil {
			panic(err)
		}
		fmt.Println(path, r.Question[0].Name, r.Response)
		c.Close()
	}
	// Output:
	// /dns-query doh.example. true
	// /family doh.example. true
}
