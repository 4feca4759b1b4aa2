// Command quicref is the DoQ reference the benchmarks measure nmecho
// against: the same echo written the plain github.com/quic-go/quic-go way,
// a goroutine per stream. It accepts connections (ALPN "doq"), accepts
// each stream, reads the query to the stream's end, and writes it back
// with QR set; no parsing, no limits, no padding, no request channel, so
// what it spends is nearly all quic-go's. It serves until SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/internal/certs"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8853", "UDP `address`")
	flag.Parse()
	cert, err := certs.Localhost()
	if err != nil {
		log.Fatal(err)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"doq"}}
	ln, err := quic.ListenAddr(*addr, tlsConf, &quic.Config{MaxIncomingStreams: 1000})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go serveConn(ctx, c)
	}
}

func serveConn(ctx context.Context, c *quic.Conn) {
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		go serveStream(s)
	}
}

// serveStream answers one query: the 2-byte length and the message, read
// to the stream's end, written back with QR set, and the stream closed.
func serveStream(s *quic.Stream) {
	b, err := io.ReadAll(s)
	if err != nil || len(b) < 2+12 {
		s.CancelWrite(2) // DOQ_PROTOCOL_ERROR
		return
	}
	b[2+2] |= 0x80
	s.Write(b)
	s.Close()
}
