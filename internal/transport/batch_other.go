//go:build !linux

package transport

import (
	"net"
	"net/netip"
)

// Batch reads or writes datagrams on one UDP socket. On this platform it
// moves one datagram per system call and carries no addresses of our own:
// a received Message's Local and IfIndex are zero, and a written one's are
// ignored (the kernel chooses the source). A Batch is not safe for
// concurrent use.
type Batch struct {
	// Msgs holds the messages; Read fills Msgs[:n], Write sends Msgs[:n].
	Msgs []Message
	conn *net.UDPConn
}

func newBatch(c *net.UDPConn, n int) (*Batch, error) { return &Batch{conn: c}, nil }

// Read blocks until a datagram arrives and returns 1, or the socket's error.
func (b *Batch) Read() (int, error) {
	m := &b.Msgs[0]
	// NewBatch leaves one spare byte past len(Buf) to detect truncation.
	n, ap, err := b.conn.ReadFromUDPAddrPort(m.Buf[:cap(m.Buf)])
	if err != nil {
		return 0, err
	}
	m.N = min(n, len(m.Buf))
	m.Truncated = n > len(m.Buf)
	m.Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return 1, nil
}

// Write sends Msgs[:n] one at a time, setting each message's Err.
func (b *Batch) Write(n int) error {
	for i := 0; i < n; i++ {
		m := &b.Msgs[i]
		if m.Addr.IsValid() {
			_, m.Err = b.conn.WriteToUDPAddrPort(m.Buf, m.Addr)
		} else {
			_, m.Err = b.conn.Write(m.Buf)
		}
		if IsClosed(m.Err) {
			for j := i + 1; j < n; j++ {
				b.Msgs[j].Err = m.Err
			}
			return m.Err
		}
	}
	return nil
}
