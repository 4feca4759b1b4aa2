// Command forward is the forwarding benchmark's forwarder: DNS over UDP
// in, every query forwarded to one upstream (DoT or DoH, or UDP and TCP)
// with a dnsmsg.Client, as CoreDNS's forward plugin does; bench/forward.sh
// measures it against CoreDNS. It serves until SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rainbowduck/netmgr/nm"
)

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", "127.0.0.1:5353", "UDP `address` to serve")
	flag.StringVar(&o.upstream, "upstream", "tls://127.0.0.1:8530", "upstream `URI` (tls://, https://, tcp://, udp://)")
	flag.StringVar(&o.caFile, "ca", "", "PEM `file` of the upstream's certificate authority")
	flag.BoolVar(&o.insecure, "k", false, "do not verify the upstream's certificate")
	flag.IntVar(&o.workers, "workers", 512, "queries forwarded at once")
	flag.IntVar(&o.conns, "conns", 0, "connections to the upstream (0: the client's default)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "forward:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	m, err := nm.New(nm.Config{})
	if err != nil {
		return err
	}
	defer m.Close()
	f, err := start(ctx, m, o)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return f.close()
}
