package stream_test

import (
	"net"
	"testing"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// BenchmarkEcho measures one small message echoed through the stream
// server path: read event, Send from the consumer, and back. The client is
// a plain net.Conn (or crypto/tls conn), so allocs/op is the server's
// (and the client's, which allocates nothing in steady state).
func BenchmarkEcho(b *testing.B) {
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			m, err := nm.New(nm.Config{Workers: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			l := k.mustListen(b, m, stream.Config{})
			wait := echoServer(l)
			defer wait()
			defer m.Close()
			var c net.Conn
			c, err = net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			if k.name == "tls" {
				c = tlsClient(c)
			}
			defer c.Close()
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				for n := 0; n < len(msg); {
					k, err := c.Read(buf[n:])
					if err != nil {
						b.Fatal(err)
					}
					n += k
				}
			}
		})
	}
}
