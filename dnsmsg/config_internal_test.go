package dnsmsg

import (
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
)

// One rule for the request timeouts: zero is the default, nm.NoTimeout no
// bound (0 to the code that arms the timers), anything else itself.
func TestRequestTimeoutRule(t *testing.T) {
	for _, c := range []struct {
		set, want time.Duration
	}{
		{0, DefaultRequestTimeout}, {nm.NoTimeout, 0}, {3 * time.Second, 3 * time.Second},
	} {
		h := HTTPConfig{RequestTimeout: c.set}
		if got := h.requestTimeout(); got != c.want {
			t.Errorf("HTTPConfig{RequestTimeout: %v}: %v; want %v", c.set, got, c.want)
		}
		s := ServerConfig{RequestTimeout: c.set}
		if got := max(s.requestTimeout(), 0); got != c.want {
			t.Errorf("ServerConfig{RequestTimeout: %v}: %v; want %v", c.set, got, c.want)
		}
	}
}
