package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// dohBenchServer starts a DoH echo server whose consumer replies in place,
// as nmecho does.
func dohBenchServer(b testing.TB) *dnsmsg.HTTPListener {
	m, err := nm.New(nm.Config{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	l, err := dnsmsg.ListenHTTPS(context.Background(), m, "127.0.0.1:0", serverTLS, nil, dnsmsg.HTTPConfig{})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for ev := range requests(l) {
			if ev.Err != nil {
				continue
			}
			dnsmsg.SetResponse(ev.Data)
			ev.Handle.Send(ev.Data)
			ev.Handle.Detach()
		}
	}()
	return l
}

// leanH2 is a blocking HTTP/2 client for benchmarks, made of x/net's
// Framer and hpack, that allocates next to nothing itself: its header
// block is encoded once (never indexed) and sent again on every stream.
type leanH2 struct {
	c        net.Conn
	fr       *http2.Framer
	block    []byte
	body     []byte // POST body, or nil for GET
	id       uint32
	received uint32 // DATA bytes not yet given back in WINDOW_UPDATE
	query    []byte
	reply    []byte // the body of the reply being read
}

func newLeanH2(addr string, q []byte, post bool) (*leanH2, error) {
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		c.Close()
		return nil, err
	}
	lc := &leanH2{c: c, fr: http2.NewFramer(c, c), id: 1, query: q}
	lc.fr.SetReuseFrames()
	lc.fr.WriteSettings()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	field := func(k, v string) { enc.WriteField(hpack.HeaderField{Name: k, Value: v, Sensitive: true}) }
	field(":scheme", "https")
	field(":authority", addr)
	if post {
		field(":method", http.MethodPost)
		field(":path", dnsmsg.DefaultPath)
		field("content-type", dnsmsg.ContentType)
		lc.body = q
	} else {
		field(":method", http.MethodGet)
		field(":path", dnsmsg.DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(q))
	}
	lc.block = buf.Bytes()
	return lc, nil
}

// exchange sends one request and reads frames until its reply has come.
func (lc *leanH2) exchange() error {
	id := lc.id
	lc.id += 2
	lc.reply = lc.reply[:0]
	lc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: lc.block, EndHeaders: true, EndStream: lc.body == nil})
	if lc.body != nil {
		lc.fr.WriteData(id, true, lc.body)
	}
	for {
		f, err := lc.fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				lc.fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if lc.received += uint32(len(f.Data())); lc.received > 16<<10 {
				lc.fr.WriteWindowUpdate(0, lc.received)
				lc.received = 0
			}
			if f.StreamID != id {
				continue
			}
			lc.reply = append(lc.reply, f.Data()...)
			if f.StreamEnded() {
				if len(lc.reply) != len(lc.query) || lc.reply[2]&0x80 == 0 {
					return fmt.Errorf("not the reply: % x", lc.reply)
				}
				return nil
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return fmt.Errorf("server ended the stream: %v", f)
		}
	}
}

// BenchmarkDoHServerPath measures one request/reply through the DoH server
// path (TLS, the HTTP/2 connection loop, the request handle, channel, Send,
// the reply's headers and body), driven by a lean blocking HTTP/2 client.
// allocs/op counts the whole process, the client's two included (the
// HEADERS frame and the TLS record it reads); BenchmarkServerOnly counts
// the server's alone.
func BenchmarkDoHServerPath(b *testing.B) {
	for _, method := range []string{"get", "post"} {
		b.Run(method, func(b *testing.B) {
			l := dohBenchServer(b)
			lc, err := newLeanH2(l.Addr().String(), benchQuery(b), method == "post")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { lc.c.Close() })
			if err := lc.exchange(); err != nil { // settings, first request
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := lc.exchange(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
