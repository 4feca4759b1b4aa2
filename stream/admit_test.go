package stream_test

import (
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

// dialFrom connects to l from the loopback address src.
func dialFrom(t *testing.T, l *stream.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read ends with an
// error other than a timeout (which says it is still open) within bound.
func closedByServer(c net.Conn, bound time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(bound))
	_, err := c.Read(make([]byte, 1))
	ne, ok := err.(net.Error)
	return err != nil && !(ok && ne.Timeout())
}

// TestAdmissionPerClient: with two connections per client address allowed,
// a third from 127.0.0.1 is closed at once and counted Refused, while
// 127.0.0.2 is accepted; once one closes, 127.0.0.1 gets in again.
func TestAdmissionPerClient(t *testing.T) {
	m := newManager(t, 1)
	l := kinds[0].mustListen(t, m, stream.Config{MaxConnsPerClient: 2, ClientPrefix4: 32})
	first := dialFrom(t, l, "127.0.0.1")
	s1 := accept(t, l)
	dialFrom(t, l, "127.0.0.1")
	s2 := accept(t, l)
	defer s2.Detach()
	third := dialFrom(t, l, "127.0.0.1")
	if !closedByServer(third, nmtest.Timeout) {
		t.Fatal("a third connection from 127.0.0.1 stays open")
	}
	if got := m.Stats().Of(nm.TCP).Refused; got != 1 {
		t.Errorf("Refused = %d; want 1", got)
	}
	dialFrom(t, l, "127.0.0.2")
	other := accept(t, l)
	defer other.Detach()
	if other.PeerAddr().Addr().String() != "127.0.0.2" {
		t.Errorf("accepted %v; want 127.0.0.2", other.PeerAddr())
	}
	// One of 127.0.0.1's ends: its place is free again.
	first.Close()
	nmtest.ExpectFinal(t, s1.Read(), 0, nm.ErrEOF)
	s1.Detach()
	// Its place is given back when its socket is closed (counted Closed).
	deadline := time.Now().Add(nmtest.Timeout)
	for m.Stats().Of(nm.TCP).Closed < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the first connection never closed")
		}
		time.Sleep(time.Millisecond)
	}
	again := dialFrom(t, l, "127.0.0.1")
	s3 := accept(t, l)
	defer s3.Detach()
	if closedByServer(again, quiet) {
		t.Error("127.0.0.1 refused after one of its connections ended")
	}
}
