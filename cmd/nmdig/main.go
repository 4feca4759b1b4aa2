// Command nmdig is a small dig-like DNS client over UDP, TCP, DNS over TLS
// and DNS over HTTPS, built on dnsmsg.Client:
//
//	nmdig -s tls://127.0.0.1:8530 -k example.org A
//	nmdig -s https://127.0.0.1:8443/dns-query -k -n 10000 -c 64 example.org
//
// One query prints the reply as dig does; -n N sends N queries, -c at a
// time, and prints the rate and latency percentiles; type AXFR transfers
// a zone.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rainbowduck/netmgr/internal/dig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dig.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
