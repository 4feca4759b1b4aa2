package stream_test

import (
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// TestSetTimeoutsMerges: a zero field of SetTimeouts keeps the timeout in
// force (setting only Idle used to remove the write timeout), and
// nm.NoTimeout removes one.
func TestSetTimeoutsMerges(t *testing.T) {
	m := newManager(t, 1)
	l := kinds[0].mustListen(t, m, stream.Config{Timeouts: nm.Timeouts{Write: 7 * time.Second}})
	c := kinds[0].mustDial(t, m, l, stream.Config{})
	defer c.Detach()
	s := accept(t, l)
	defer s.Detach()
	s.SetTimeouts(nm.Timeouts{Idle: 5 * time.Second})
	got := stream.Timeouts(s)
	want := nm.Timeouts{Initial: stream.DefaultInitialTimeout, Idle: 5 * time.Second, Keepalive: stream.DefaultKeepalive, Write: 7 * time.Second}
	if got != want {
		t.Errorf("after SetTimeouts(Idle: 5s): %+v; want %+v", got, want)
	}
	s.SetTimeouts(nm.Timeouts{Write: nm.NoTimeout})
	want.Write = 0
	if got := stream.Timeouts(s); got != want {
		t.Errorf("after SetTimeouts(Write: NoTimeout): %+v; want %+v", got, want)
	}
}
