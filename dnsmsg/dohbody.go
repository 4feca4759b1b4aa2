package dnsmsg

import (
	"sync"

	"github.com/rainbowduck/netmgr/internal/core"
)

// Request bodies grow with the bytes that arrive, never with a length
// the client announces: a body's buffer is taken from size classes (each
// 4 times the last, up to 64 KiB), the large ones pooled; and the bytes
// buffered in bodies not yet complete are capped per connection and per
// listener (HTTPConfig.MaxBodyBytes, MaxListenerBodyBytes).

// bodyClasses are the sizes of body buffers; the last holds any message.
var bodyClasses = [...]int{512, 2 << 10, 8 << 10, 32 << 10, 64 << 10}

// bodyPools hold the buffers of the classes past 4 KiB (smaller ones stay
// with their pooled handle), by index in bodyClasses.
var bodyPools [len(bodyClasses)]sync.Pool

func bodyClass(n int) int {
	for i, c := range bodyClasses {
		if n <= c {
			return i
		}
	}
	return len(bodyClasses) - 1
}

// growBody gives h's buffer room for n bytes (n <= 64 KiB), keeping its
// first keep bytes, and returns all of it.
func growBody(h core.Handle, n, keep int) []byte {
	if cap(*h.Buf()) >= n {
		(*h.Buf()) = (*h.Buf())[:cap(*h.Buf())]
		return (*h.Buf())
	}
	i := bodyClass(n)
	b, _ := bodyPools[i].Get().([]byte)
	if b == nil {
		b = make([]byte, bodyClasses[i])
	}
	copy(b, (*h.Buf())[:keep])
	putBody(*h.Buf())
	(*h.Buf()) = b[:cap(b)]
	return (*h.Buf())
}

// putBody gives a large body buffer back to its pool.
func putBody(b []byte) {
	if c := cap(b); c > 4<<10 {
		if i := bodyClass(c); bodyClasses[i] == c {
			bodyPools[i].Put(b[:c]) // boxing the slice costs one small allocation per large body
		}
	}
}

// chargeBody counts n more body bytes buffered on a connection whose
// count is *conn; false (nothing counted) when that passes the
// connection's or the listener's cap.
func (s *httpServer) chargeBody(conn *int, n int) bool {
	if *conn+n > s.cfg.maxBodyBytes() {
		return false
	}
	if s.body.Add(int64(n)) > int64(s.cfg.maxListenerBodyBytes()) {
		s.body.Add(-int64(n))
		return false
	}
	*conn += n
	return true
}

// unchargeBody takes n body bytes off the counts.
func (s *httpServer) unchargeBody(conn *int, n int) {
	*conn -= n
	s.body.Add(-int64(n))
}
