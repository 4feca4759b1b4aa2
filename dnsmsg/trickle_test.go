package dnsmsg_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// trickle opens n connections to l that each announce the largest message
// (65535 bytes) and send 4 KiB of it, then nothing. It returns them and
// how many writes failed (the server may end a connection first).
func trickle(t *testing.T, k skind, l *dnsmsg.Listener, n int) ([]net.Conn, int) {
	t.Helper()
	start := append([]byte{0xff, 0xff}, make([]byte, 4<<10)...)
	conns := make([]net.Conn, n)
	failed := 0
	for i := range conns {
		conns[i] = k.raw(t, l)
		if _, err := conns[i].Write(start); err != nil {
			failed++
		}
	}
	return conns, failed
}

// exchangeGood checks that a good client on l is answered.
func exchangeGood(t *testing.T, k skind, m *nm.Manager, l *dnsmsg.Listener) {
	t.Helper()
	good := k.dial(t, m, l, dnsmsg.ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := good.Exchange(ctx, query("good.example")); err != nil {
		t.Fatalf("a good client: %v", err)
	}
	good.Close()
}

// TestTrickleHoldsWhatArrived (issue #17): connections that announce a
// 65535-byte message, send 4 KiB of it and then trickle cost the server
// about what they sent, not what they announced: 2000 of them grow the
// heap by under 20 KiB each, both ends of the connection included (39 MiB;
// on 0d025ce: 76 KiB each, 150 MiB), 300 over DoT by under 48 KiB each
// (14 MiB; 0d025ce: 95 KiB each), and a good client is answered meanwhile.
func TestTrickleHoldsWhatArrived(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		n, perConn := 2000, 20<<10
		if k.stat == nm.TLS {
			n, perConn = 300, 48<<10 // handshakes cost more
		}
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{})
		wait := echoServer(t, l, asReply)
		base := heapInUse()
		conns, failed := trickle(t, k, l, n)
		if failed > 0 {
			t.Fatalf("%d connections failed", failed)
		}
		// The server has taken the bytes once the heap holds them.
		var grew int64
		waitFor(t, "the server to read the partial messages", func() bool {
			grew = int64(heapInUse()) - int64(base)
			return grew >= int64(n)*4<<10
		})
		if bound := int64(n * perConn); grew > bound {
			t.Errorf("%d connections that sent 4 KiB grew the heap by %d KiB; want under %d", n, grew>>10, bound>>10)
		}
		t.Logf("%d connections: heap +%d KiB, %d bytes each", n, grew>>10, grew/int64(n))
		exchangeGood(t, k, m, l)
		for _, c := range conns {
			c.Close()
		}
		l.Close()
		wait()
	})
}

// TestTrickleListenerCap: past ServerConfig.MaxBuffered, the connections
// whose partial messages would grow are ended, counted TooLarge, and a
// good client is still answered.
func TestTrickleListenerCap(t *testing.T) {
	forStreams(t, func(t *testing.T, k skind) {
		m := newManager(t, 2)
		l := k.listen(t, m, dnsmsg.ServerConfig{MaxBuffered: 1 << 20})
		wait := echoServer(t, l, asReply)
		// Each holds an 8 KiB buffer: 128 fit under 1 MiB.
		const n = 300
		conns, _ := trickle(t, k, l, n)
		waitFor(t, "connections past the cap to end", func() bool {
			return m.Stats().Of(k.stat).TooLarge >= n-128
		})
		exchangeGood(t, k, m, l)
		// A connection is counted TooLarge just before its socket closes:
		// the ends are looked for again, within a bound, until enough came.
		ended, gone := 0, make([]bool, len(conns))
		for deadline := time.Now().Add(nmtest.Timeout); ended < n-128 && time.Now().Before(deadline); {
			for i, c := range conns {
				if gone[i] {
					continue
				}
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					gone[i] = true
					ended++
				}
			}
		}
		if ended < n-128 {
			t.Errorf("%d connections ended; want at least %d", ended, n-128)
		}
		for _, c := range conns {
			c.Close()
		}
		l.Close()
		wait()
	})
}
