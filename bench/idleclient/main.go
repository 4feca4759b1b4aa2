// Command idleclient opens many idle connections to a stream echo server,
// for measuring what an idle connection costs the server. It prints
// "ready" once every connection is up (and, with -echo, has echoed one
// message), then holds them until stdin closes.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5301", "server `address`")
	n := flag.Int("n", 10000, "connections")
	useTLS := flag.Bool("tls", false, "connect with TLS")
	echo := flag.Bool("echo", false, "echo one message on each connection before idling")
	flag.Parse()
	conns := make([]net.Conn, 0, *n)
	msg := []byte("ping")
	buf := make([]byte, len(msg))
	for i := 0; i < *n; i++ {
		c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		if *useTLS {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				log.Fatalf("connection %d: %v", i, err)
			}
			c = tc
		}
		if *echo {
			c.Write(msg)
			if _, err := io.ReadFull(c, buf); err != nil {
				log.Fatalf("connection %d: %v", i, err)
			}
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
