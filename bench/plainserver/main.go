// Command plainserver is the floor the idle-connection benchmark measures
// nmecho against: the plainest Go stream server there is, one goroutine per
// connection blocked in Read on a 2-byte stack buffer (a DNS length
// prefix), over TCP or, with -tls, crypto/tls (the handshake done first).
// What an idle connection costs it is what Go's runtime, net and
// crypto/tls cost; anything nmecho adds is on top. It serves until SIGTERM.
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rainbowduck/netmgr/internal/certs"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5301", "listen `address`")
	useTLS := flag.Bool("tls", false, "serve TLS")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var conf *tls.Config
	if *useTLS {
		cert, err := certs.Localhost()
		if err != nil {
			log.Fatal(err)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c, conf)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	ln.Close()
}

// serve reads length prefixes until the peer goes; the bodies are
// skipped: only idle connections are measured.
func serve(c net.Conn, conf *tls.Config) {
	defer c.Close()
	if conf != nil {
		tc := tls.Server(c, conf)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	var prefix [2]byte
	for {
		if _, err := c.Read(prefix[:]); err != nil {
			return
		}
	}
}
