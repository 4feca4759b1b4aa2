// Command nmecho is the netmgr demo server: it answers every DNS request
// with the same message, QR bit set. With no flags it serves on loopback.
// Wildcard addresses work: 0.0.0.0 serves every IPv4 address, [::] every
// IPv6 and IPv4 address, and UDP replies leave from the address each query
// was sent to. Sockets passed by systemd socket activation (LISTEN_FDS)
// are served too, by name ("udp", "tcp", "dot", "doh") or else by type.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/rainbowduck/netmgr/internal/echo"
)

func main() {
	var o echo.Options
	flag.StringVar(&o.UDP, "udp", "127.0.0.1:5300", "DNS over UDP `address` (empty: off; 0.0.0.0:53 all IPv4, [::]:53 all IPv6 and IPv4)")
	flag.StringVar(&o.TCP, "tcp", "127.0.0.1:5300", "DNS over TCP `address` (empty: off; wildcards as -udp)")
	flag.StringVar(&o.DoT, "dot", "127.0.0.1:8530", "DNS over TLS `address` (empty: off)")
	flag.StringVar(&o.DoH, "doh", "127.0.0.1:8443", "DNS over HTTPS `address` (empty: off)")
	flag.StringVar(&o.DoQ, "doq", "127.0.0.1:8853", "DNS over QUIC `address` (empty: off; PROXY v2 is not defined for QUIC)")
	flag.StringVar(&o.Echo, "echo", "", "raw TCP echo `address` (empty: off)")
	flag.StringVar(&o.TLSEcho, "tls-echo", "", "raw TLS echo `address` (empty: off)")
	flag.StringVar(&o.CertFile, "cert", "", "TLS certificate PEM `file` (default: self-signed for localhost)")
	flag.StringVar(&o.KeyFile, "key", "", "TLS key PEM `file`")
	flag.IntVar(&o.Workers, "workers", 0, "worker shards (0: one per CPU)")
	flag.IntVar(&o.MaxConns, "max-conns", 0, "connections per stream listener; past it new ones are closed at once (0: 10000, negative: no cap)")
	flag.BoolVar(&o.Proxy, "proxy", false, "expect a PROXY protocol v2 header on every DNS listener (before TLS)")
	flag.BoolVar(&o.WhoAmI, "whoami", false, "answer each query with the client's address (A or AAAA) instead of echoing it")
	flag.DurationVar(&o.Drain, "drain", 5*time.Second, "on SIGTERM or Ctrl-C, let the answers in progress go out for at most `duration` (0: stop at once)")
	flag.DurationVar(&o.Delay, "delay", 0, "answer every query after `duration`, as a slow backend would")
	flag.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics on http://`address`/metrics (empty: off)")
	flag.DurationVar(&o.Report, "report", 0, "print goroutines, heap and message counts every `interval` (0: off)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to `file` until exit")
	logLevel := flag.String("log", "info", "log the library's records at `level` and above to stderr: debug, info, warn, error, or off")
	flag.Parse()
	if *logLevel != "off" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			fmt.Fprintln(os.Stderr, "nmecho: -log:", err)
			os.Exit(2)
		}
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	var err error
	if o.Sockets, err = echo.Activated(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(o.Sockets) > 0 {
		onlyPassed(&o)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "nmecho:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := echo.Run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// onlyPassed turns off, when sockets were passed in, the listeners that
// got none and whose address was not set on the command line: a socket
// activated server listens where it is told.
func onlyPassed(o *echo.Options) {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, addr := range map[string]*string{"udp": &o.UDP, "tcp": &o.TCP, "dot": &o.DoT, "doh": &o.DoH, "doq": &o.DoQ} {
		if _, passed := o.Sockets[name]; !passed && !set[name] {
			*addr = ""
		}
	}
}
