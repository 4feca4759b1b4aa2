package stream

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestAdmissionRate: a client (a /24) may open ClientRate connections a
// second, a second's worth at once; the bucket refills with time; another
// prefix has its own.
func TestAdmissionRate(t *testing.T) {
	a := newAdmission(&Config{ClientRate: 3})
	now := time.Unix(1000, 0)
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for i := 0; i < 3; i++ {
		if k, why := a.admit(addr(fmt.Sprintf("192.0.2.%d", i+1)), now); why != "" {
			t.Fatalf("connection %d refused: %s", i, why)
		} else {
			a.release(k)
		}
	}
	if _, why := a.admit(addr("192.0.2.200"), now); why == "" {
		t.Error("a fourth connection in the same second from the same /24 was admitted")
	}
	if k, why := a.admit(addr("198.51.100.1"), now); why != "" {
		t.Errorf("another /24 refused: %s", why)
	} else {
		a.release(k)
	}
	if k, why := a.admit(addr("192.0.2.9"), now.Add(time.Second/3+time.Millisecond)); why != "" {
		t.Errorf("refused after a third of a second (one token earned): %s", why)
	} else {
		a.release(k)
	}
	// IPv6 clients are /56 prefixes.
	v6 := newAdmission(&Config{MaxConnsPerClient: 1})
	k, why := v6.admit(addr("2001:db8:0:1::1"), now)
	if why != "" {
		t.Fatal(why)
	}
	if _, why := v6.admit(addr("2001:db8:0:ff::2"), now); why == "" {
		t.Error("a second connection from the same /56 was admitted")
	}
	if _, why := v6.admit(addr("2001:db8:0:100::1"), now); why != "" {
		t.Errorf("another /56 refused: %s", why)
	}
	v6.release(k)
}

// TestAdmissionTableBounded: an attacker with many addresses cannot grow
// the table past MaxClients; idle entries are swept out to make room.
func TestAdmissionTableBounded(t *testing.T) {
	a := newAdmission(&Config{ClientRate: 1, ClientPrefix4: 32, MaxClients: 100})
	now := time.Unix(1000, 0)
	admitted := 0
	for i := 0; i < 10000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if k, why := a.admit(ip, now); why == "" {
			admitted++
			a.release(k)
		}
		if n := a.tracked(); n > 100 {
			t.Fatalf("%d clients tracked; want at most 100", n)
		}
	}
	if admitted != 100 {
		t.Errorf("%d admitted in one instant; want 100 (the table's size)", admitted)
	}
	// Two seconds later their buckets are full again: they are idle, and a
	// new client finds room.
	if k, why := a.admit(netip.MustParseAddr("10.9.9.9"), now.Add(2*time.Second)); why != "" {
		t.Errorf("a new client refused once the others are idle: %s", why)
	} else {
		a.release(k)
	}
	if n := a.tracked(); n > 2 {
		t.Errorf("%d clients tracked after the sweep; want the new one", n)
	}
}
