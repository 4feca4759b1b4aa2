package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// options configure a forwarder.
type options struct {
	listen   string // UDP address to serve
	upstream string // dnsmsg.Client upstream URI
	caFile   string // PEM roots for the upstream's certificate; empty: system roots
	insecure bool   // do not verify the upstream's certificate
	workers  int    // Serve's workers: the queries forwarded at once
	conns    int    // connections to the upstream
}

// forwarder serves DNS over UDP and forwards every query to one upstream
// with a dnsmsg.Client.
type forwarder struct {
	m    *nm.Manager
	l    *dnsmsg.Listener
	c    *dnsmsg.Client
	up   string
	done chan error // Serve's result
}

func start(ctx context.Context, m *nm.Manager, o options) (*forwarder, error) {
	conf, err := tlsConfig(o)
	if err != nil {
		return nil, err
	}
	l, err := dnsmsg.ListenUDP(ctx, m, o.listen, dnsmsg.ServerConfig{})
	if err != nil {
		return nil, err
	}
	f := &forwarder{m: m, l: l, up: o.upstream, done: make(chan error, 1),
		c: dnsmsg.NewClient(m, dnsmsg.ClientConfig{TLS: conf, MaxConns: o.conns, MaxInFlight: 1000})}
	go func() {
		f.done <- dnsmsg.Serve(ctx, l.Requests(), dnsmsg.HandlerFunc(f.serve), dnsmsg.ServeConfig{Workers: o.workers})
	}()
	return f, nil
}

// serve forwards one request; a query that gets no reply is answered
// SERVFAIL.
func (f *forwarder) serve(r *dnsmsg.Request) {
	reply, err := f.c.ExchangeWire(r.Context(), f.up, r.Wire())
	if err == nil {
		r.ReplyWire(reply)
		return
	}
	q, perr := r.Msg()
	if perr == nil {
		r.Reply(new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))
	}
}

// close stops the listener and the client and waits for Serve.
func (f *forwarder) close() error {
	f.l.Close()
	err := <-f.done
	f.c.Close()
	return err
}

func tlsConfig(o options) (*tls.Config, error) {
	conf := &tls.Config{InsecureSkipVerify: o.insecure}
	if o.caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(o.caFile)
	if err != nil {
		return nil, err
	}
	conf.RootCAs = x509.NewCertPool()
	if !conf.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", o.caFile)
	}
	return conf, nil
}
