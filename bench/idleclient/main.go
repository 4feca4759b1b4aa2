// Command idleclient opens many idle connections to a stream echo server,
// for measuring what an idle connection costs the server. It prints
// "ready" once every connection is up (and, with -echo, has echoed one
// message, or with -query, has had the answer to one DNS query), then
// holds them until stdin closes.
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
	query := flag.Bool("query", false, "ask one DNS query (length-prefixed, as over TCP) on each connection before idling")
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
		if *query && !askOne(c) {
			log.Fatalf("connection %d: no answer to its query", i)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// dnsQuery is a DNS query for ". A", with its TCP length prefix.
var dnsQuery = []byte{0, 17, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}

// askOne sends dnsQuery on c and reads the answer; false if none came.
func askOne(c net.Conn) bool {
	if _, err := c.Write(dnsQuery); err != nil {
		return false
	}
	var pfx [2]byte
	if _, err := io.ReadFull(c, pfx[:]); err != nil {
		return false
	}
	_, err := io.CopyN(io.Discard, c, int64(pfx[0])<<8|int64(pfx[1]))
	return err == nil
}
