// Command refserver is the reference the benchmarks measure nmecho
// against: the same DNS echo (every request answered with itself, QR set)
// written the straightforward way, with github.com/miekg/dns for UDP, TCP
// and DoT and a plain net/http handler for DoH. It serves until SIGTERM.
//
// It is configured as miekg/dns users run it at load (CoreDNS does the
// same): MaxTCPQueries is -1, so a TCP or DoT connection serves any number
// of queries. The default (128) closes each connection after 128 queries,
// which makes dnsperf lose queries and would measure a default rather than
// the transport. Everything else is the package's default.
package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/internal/certs"
)

func main() {
	udp := flag.String("udp", "127.0.0.1:5400", "DNS over UDP `address` (empty: off)")
	tcp := flag.String("tcp", "127.0.0.1:5400", "DNS over TCP `address` (empty: off)")
	dot := flag.String("dot", "127.0.0.1:8540", "DNS over TLS `address` (empty: off)")
	doh := flag.String("doh", "127.0.0.1:8440", "DNS over HTTPS `address` (empty: off)")
	flag.Parse()
	cert, err := certs.Localhost()
	if err != nil {
		log.Fatal(err)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	echo := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		r.Response = true
		w.WriteMsg(r)
	})
	var servers []*dns.Server
	for _, s := range []*dns.Server{
		{Addr: *udp, Net: "udp", Handler: echo},
		{Addr: *tcp, Net: "tcp", Handler: echo, MaxTCPQueries: -1},
		{Addr: *dot, Net: "tcp-tls", Handler: echo, TLSConfig: tlsConf, MaxTCPQueries: -1},
	} {
		if s.Addr == "" {
			continue
		}
		servers = append(servers, s)
		go func() {
			if err := s.ListenAndServe(); err != nil {
				log.Fatalf("%s: %v", s.Net, err)
			}
		}()
	}
	var hs *http.Server
	if *doh != "" {
		hs = &http.Server{Addr: *doh, Handler: http.HandlerFunc(serveDoH), TLSConfig: tlsConf, ErrorLog: log.New(io.Discard, "", 0)}
		go func() {
			if err := hs.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("doh: %v", err)
			}
		}()
	}
	log.Printf("refserver: udp %s, tcp %s, dot %s, doh %s", *udp, *tcp, *dot, *doh)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	for _, s := range servers {
		s.Shutdown()
	}
	if hs != nil {
		hs.Close()
	}
}

// serveDoH answers RFC 8484 GET and POST requests with the query, QR set.
func serveDoH(w http.ResponseWriter, r *http.Request) {
	var q []byte
	var err error
	switch r.Method {
	case http.MethodGet:
		q, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
	case http.MethodPost:
		q, err = io.ReadAll(io.LimitReader(r.Body, 65536))
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err != nil || len(q) < 12 {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	q[2] |= 0x80
	w.Header().Set("Content-Type", "application/dns-message")
	w.Write(q)
}
