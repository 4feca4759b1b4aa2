package dnsmsg_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// A Client shared by ten goroutines: their queries are pipelined on the
// Client's connections to the upstream, and each gets its own reply with
// its own ID, although all chose ID 1.
func ExampleClient() {
	m, _ := nm.New(nm.Config{})
	defer m.Close()
	l, err := dnsmsg.ListenTCP(context.Background(), m, "127.0.0.1:0", dnsmsg.ServerConfig{})
	if err != nil {
		panic(err)
	}
	go dnsmsg.Serve(context.Background(), l.Requests(), dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
		q, err := r.Msg()
		if err == nil {
			r.Reply(new(dns.Msg).SetReply(q))
		}
	}), dnsmsg.ServeConfig{})

	c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	answered := make([]bool, 10)
	for i := range answered {
		wg.Go(func() {
			q := new(dns.Msg).SetQuestion(fmt.Sprintf("q%d.example.", i), dns.TypeA)
			q.Id = 1
			r, err := c.Exchange(ctx, "tcp://"+l.Addr().String(), q)
			answered[i] = err == nil && r.Id == 1 && r.Question[0].Name == q.Question[0].Name
		})
	}
	wg.Wait()
	fmt.Println(answered)
	// Output: [true true true true true true true true true true]
}
