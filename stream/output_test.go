package stream_test

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// deafPeer connects to l with a 4 KiB receive buffer (set before connecting,
// so the window stays small), completes the TLS handshake for TLS kinds,
// and then reads nothing: a peer that never takes what it is sent.
func deafPeer(t *testing.T, k kind, l *stream.Listener) net.Conn {
	t.Helper()
	d := net.Dialer{Control: smallRcvBuf}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if k.stat == nm.TLS {
		conf := clientTLS.Clone()
		conf.ServerName = "localhost"
		tc := tls.Client(c, conf)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	return c
}

// TestSendNeverWaits: with a peer that reads nothing, Send keeps returning
// (a Send that waited for the peer would hang the test) until the output
// bound is reached; that Send fails with nm.ErrOutputFull, the connection
// is reset and its final event says why, counted, and later sends fail at
// once.
func TestSendNeverWaits(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		const bound = 256 << 10
		l := k.mustListen(t, m, stream.Config{MaxOutput: bound, Timeouts: nm.Timeouts{Write: nm.NoTimeout}})
		deafPeer(t, k, l)
		s := accept(t, l)
		defer s.Detach()
		ch := s.Read()
		chunk := make([]byte, 16<<10)
		var err error
		sent := 0
		// 64 MiB is far more than the kernel's buffers and the bound hold.
		for ; sent < 4096 && err == nil; sent++ {
			err = s.Send(chunk)
		}
		if !errors.Is(err, nm.ErrOutputFull) {
			t.Fatalf("after %d sends of 16 KiB: %v; want ErrOutputFull", sent, err)
		}
		nmtest.ExpectFinal(t, ch, 0, nm.ErrOutputFull)
		if err := s.Send(chunk); !errors.Is(err, nm.ErrClosed) {
			t.Errorf("Send after the cut-off: %v; want ErrClosed", err)
		}
		if got := m.Stats().Of(k.stat).OutputFull; got != 1 {
			t.Errorf("OutputFull = %d; want 1", got)
		}
	})
}

// TestWriteTimeoutResets: a peer that takes nothing for the write timeout,
// with the output under its bound, is reset: the queued sends fail, the
// final event is nm.ErrTimedOut, and WriteTimeouts counts it.
func TestWriteTimeoutResets(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{MaxOutput: 64 << 20, Timeouts: nm.Timeouts{Write: 200e6}})
		peer := deafPeer(t, k, l)
		s := accept(t, l)
		defer s.Detach()
		ch := s.Read()
		chunk := make([]byte, 64<<10)
		const n = 256 // 16 MiB: more than the kernel's buffers hold
		done := make(chan error, n)
		for i := 0; i < n; i++ {
			if err := s.SendAsync(chunk, done); err != nil {
				t.Fatalf("SendAsync %d: %v", i, err)
			}
		}
		failed := 0
		for i := 0; i < n; i++ {
			if err := <-done; err != nil {
				failed++
			}
		}
		if failed == 0 {
			t.Error("16 MiB went to a peer that reads nothing")
		}
		nmtest.ExpectFinal(t, ch, 0, nm.ErrTimedOut)
		if got := m.Stats().Of(k.stat).WriteTimeouts; got != 1 {
			t.Errorf("WriteTimeouts = %d; want 1", got)
		}
		// The peer finds its connection reset.
		buf := make([]byte, 64<<10)
		for i := 0; i < 1<<12; i++ {
			if _, err := peer.Read(buf); err != nil {
				return
			}
		}
		t.Error("the peer's connection is still open")
	})
}

// TestWritesBatch: replies that wait together go out together. A peer
// holds off reading while 8000 messages (8 MiB, more than the kernel's
// buffers hold) are sent, then reads them all: the
// ones that waited leave in a few writev calls (TLS: a few records), so
// the Writes counter (system calls) ends well below Sent (messages).
func TestWritesBatch(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{MaxOutput: 16 << 20})
		peer := deafPeer(t, k, l)
		s := accept(t, l)
		defer s.Detach()
		const n, size = 8000, 1 << 10
		msg := make([]byte, size)
		for i := 0; i < n; i++ {
			if err := s.Send(msg); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
		buf := make([]byte, 64<<10)
		for got := 0; got < n*size; {
			r, err := peer.Read(buf)
			if err != nil {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			got += r
		}
		// The writer counts a write once its system call returns, which
		// may be after the peer has read the bytes.
		st := m.Stats().Of(k.stat)
		for deadline := time.Now().Add(nmtest.Timeout); st.Sent != n && time.Now().Before(deadline); st = m.Stats().Of(k.stat) {
			time.Sleep(time.Millisecond) // polling a counter, bounded above
		}
		if st.Sent != n || st.Writes >= st.Sent {
			t.Errorf("Sent %d in %d writes; want %d in fewer", st.Sent, st.Writes, n)
		}
		t.Logf("%d messages in %d write system calls", st.Sent, st.Writes)
	})
}

// TestCloseWriteAfterOutput: CloseWrite waits for what was sent before
// it: the peer reads every byte of 4 MiB sent just before, then the end
// of the stream; a send after it fails.
func TestCloseWriteAfterOutput(t *testing.T) {
	forKinds(t, func(t *testing.T, k kind) {
		m := newManager(t, 1)
		l := k.mustListen(t, m, stream.Config{MaxOutput: 8 << 20})
		c := k.mustDial(t, m, l, stream.Config{})
		defer c.Detach()
		s := accept(t, l)
		defer s.Detach()
		msg := make([]byte, 64<<10)
		for i := 0; i < 64; i++ {
			msg[0] = byte(i)
			if err := s.Send(msg); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
		if err := stream.CloseWrite(s); err != nil {
			t.Fatal(err)
		}
		if err := s.Send(msg); !errors.Is(err, nm.ErrClosed) {
			t.Errorf("Send after CloseWrite: %v; want ErrClosed", err)
		}
		got := readN(t, c, 64*len(msg))
		for i := 0; i < 64; i++ {
			if got[i*len(msg)] != byte(i) {
				t.Fatalf("message %d out of place", i)
			}
		}
		nmtest.ExpectFinal(t, c.Read(), 0, nm.ErrEOF)
	})
}
