// Package dig is the body of cmd/nmdig, a small dig-like client over UDP,
// TCP, DNS over TLS and DNS over HTTPS built on dnsmsg.Client: one query
// printed as dig prints it, a zone transfer, or many concurrent queries
// with their rate and latency percentiles.
package dig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// Options is what to ask and how.
type Options struct {
	Server   string        // upstream URI: udp://, tcp://, tls://, https://
	Name     string        // the question's name
	Type     uint16        // the question's type
	N        int           // queries in all; 1 prints the reply
	C        int           // queries in flight at once
	Timeout  time.Duration // per query
	Insecure bool          // do not verify TLS certificates
	CAFile   string        // PEM roots to trust instead of the system's
	HTTPGet  bool          // DoH with GET
	Conns    int           // connections per upstream (dnsmsg.ClientConfig.MaxConns)
}

// Main parses nmdig's command line (flags, then name and type), runs it
// and returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "nmdig:", err)
		return 2
	}
	if err := Run(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "nmdig:", err)
		return 1
	}
	return 0
}

func parse(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("nmdig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: nmdig [flags] name [type]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Server, "s", "udp://127.0.0.1:53", "upstream `URI`: udp://host[:port], tcp://…, tls://… (DoT), https://host/dns-query (DoH)")
	fs.IntVar(&o.N, "n", 1, "`queries` in all; with more than 1, print the rate and latency percentiles")
	fs.IntVar(&o.C, "c", 1, "queries in flight at `once`")
	fs.DurationVar(&o.Timeout, "t", 5*time.Second, "per-query `timeout`")
	fs.BoolVar(&o.Insecure, "k", false, "do not verify the server's certificate")
	fs.StringVar(&o.CAFile, "ca", "", "trust the PEM certificates of `file`")
	fs.BoolVar(&o.HTTPGet, "get", false, "DoH: send queries with GET")
	fs.IntVar(&o.Conns, "conns", 0, "connections per upstream (0: the client's default)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch fs.NArg() {
	case 1:
		o.Type = dns.TypeA
	case 2:
		t, ok := dns.StringToType[strings.ToUpper(fs.Arg(1))]
		if !ok {
			return o, fmt.Errorf("unknown type %q", fs.Arg(1))
		}
		o.Type = t
	default:
		fs.Usage()
		return o, errors.New("want a name and an optional type")
	}
	o.Name = dns.Fqdn(fs.Arg(0))
	if o.N < 1 || o.C < 1 {
		return o, errors.New("-n and -c must be at least 1")
	}
	return o, nil
}

// Run asks o's question and writes what came to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	tlsConf, err := o.tls()
	if err != nil {
		return err
	}
	m, err := nm.New(nm.Config{})
	if err != nil {
		return err
	}
	defer m.Close()
	c := dnsmsg.NewClient(m, dnsmsg.ClientConfig{ReadTimeout: o.Timeout, TLS: tlsConf,
		HTTPGet: o.HTTPGet, MaxConns: o.Conns, MaxFailures: -1})
	defer c.Close()
	switch {
	case o.Type == dns.TypeAXFR || o.Type == dns.TypeIXFR:
		return transfer(ctx, c, o, out)
	case o.N == 1:
		return one(ctx, c, o, out)
	}
	return load(ctx, c, o, out)
}

func (o *Options) tls() (*tls.Config, error) {
	conf := &tls.Config{InsecureSkipVerify: o.Insecure}
	if o.CAFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, err
	}
	conf.RootCAs = x509.NewCertPool()
	if !conf.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", o.CAFile)
	}
	return conf, nil
}

func (o *Options) query() *dns.Msg {
	q := new(dns.Msg).SetQuestion(o.Name, o.Type)
	q.RecursionDesired = true
	return q
}

// one asks once and prints the reply as dig does.
func one(ctx context.Context, c *dnsmsg.Client, o Options, out io.Writer) error {
	start := time.Now()
	r, err := c.Exchange(ctx, o.Server, o.query())
	if err != nil {
		return err
	}
	fmt.Fprintln(out, r.String())
	fmt.Fprintf(out, ";; Query time: %d msec\n;; SERVER: %s\n", time.Since(start).Milliseconds(), o.Server)
	return nil
}

// transfer prints every record of a zone transfer.
func transfer(ctx context.Context, c *dnsmsg.Client, o Options, out io.Writer) error {
	ch, err := c.Transfer(ctx, o.Server, o.query())
	if err != nil {
		return err
	}
	msgs, records := 0, 0
	for ev := range ch {
		if ev.Err != nil {
			if !errors.Is(ev.Err, nm.ErrEOF) {
				return ev.Err
			}
			break
		}
		r, err := dnsmsg.Parse(ev.Data)
		if err != nil {
			return err
		}
		msgs++
		for _, rr := range r.Answer {
			records++
			fmt.Fprintln(out, rr.String())
		}
	}
	fmt.Fprintf(out, ";; XFR size: %d records (messages %d)\n;; SERVER: %s\n", records, msgs, o.Server)
	return nil
}
