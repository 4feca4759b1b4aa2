package dnsmsg

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
)

// FuzzDoHConn feeds arbitrary bytes, after the client preface, to the
// HTTP/2 connection loop of a DoH server (over an in-memory pipe, a reply
// for every request delivered): it must neither panic nor hang, and must
// give back every in-flight place it took.
func FuzzDoHConn(f *testing.F) {
	for _, seed := range h2Seeds() {
		f.Add(seed)
	}
	m, err := nm.New(nm.Config{Workers: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	var cfg HTTPConfig
	cfg.MaxStreams = 8
	cfg.MaxInFlight = 4
	cfg.MaxHeaderBytes = 4 << 10
	cfg.Stream.Timeouts.Initial = time.Second
	cfg.Stream.Timeouts.Idle = time.Second
	cfg.Stream.Timeouts.Write = time.Second
	s := newHTTPServer((*core.Manager)(m), cfg)
	eps, err := NewEndpoints(16)
	if err != nil {
		f.Fatal(err)
	}
	s.eps.Store(eps)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for ev := range eps.Requests(DefaultPath) {
			if ev.Err != nil {
				continue
			}
			reply := append([]byte(nil), ev.Data...)
			SetResponse(reply)
			ev.Handle.Send(reply)
			ev.Handle.Detach()
		}
	}()
	defer func() { close(s.stop); eps.end(); <-served }()

	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		hc := &httpConn{shard: (*core.Manager)(m).NextShard()}
		drained := make(chan struct{})
		go func() { io.Copy(io.Discard, client); close(drained) }()
		go func() {
			client.Write(in)
			client.Close()
		}()
		c := s.newH2Conn(hc, server, false)
		done := make(chan struct{})
		go func() { c.serve(true); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the connection loop did not return:\n%s", buf[:runtime.Stack(buf, true)])
		}
		server.Close()
		<-drained
		// Replies still being written finish on their own; then every
		// place is free.
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.mu.Lock()
			n := c.inFlight
			c.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d in-flight places never given back", n)
			}
			time.Sleep(time.Millisecond) // polling a count
		}
	})
}

// h2Seeds returns well-formed frame sequences a client sends after its
// preface: GET, POST in pieces, trailers, control frames, a reset.
func h2Seeds() [][]byte {
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	enc := hpack.NewEncoder(&hbuf)
	block := func(kv ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	q := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'c', 'o', 'm', 0, 0, 1, 0, 1}
	get := block(":method", "GET", ":scheme", "https", ":path", DefaultPath+"?dns="+base64.RawURLEncoding.EncodeToString(q))
	post := block(":method", "POST", ":scheme", "https", ":path", DefaultPath, "content-type", ContentType)
	var seeds [][]byte
	seq := func(write func()) {
		buf.Reset()
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 20})
		write()
		seeds = append(seeds, append([]byte(nil), buf.Bytes()...))
	}
	seq(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndHeaders: true, EndStream: true})
	})
	seq(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
		fr.WriteData(1, false, q[:5])
		fr.WriteData(1, true, q[5:])
		fr.WriteWindowUpdate(1, 100)
		fr.WriteWindowUpdate(0, 100)
	})
	seq(func() {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: post[:4], EndHeaders: false})
		fr.WriteContinuation(3, true, post[4:])
		fr.WriteData(3, false, q)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("x-t", "1"), EndHeaders: true, EndStream: true})
	})
	seq(func() {
		fr.WritePing(false, [8]byte{1})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: get, EndHeaders: true, EndStream: true})
		fr.WriteRSTStream(5, http2.ErrCodeCancel)
		fr.WriteGoAway(5, http2.ErrCodeNo, nil)
	})
	return seeds
}
