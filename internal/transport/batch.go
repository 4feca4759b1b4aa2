package transport

import (
	"net"
	"net/netip"
)

// Message is one datagram of a Batch.
type Message struct {
	// Buf is, when reading, the buffer to fill (its length is the largest
	// datagram accepted) and, when writing, the bytes to send.
	Buf []byte
	// N is the number of bytes received into Buf.
	N int
	// Addr is the sender of a received datagram, or the destination of one
	// to send (the zero value on connected sockets). IPv4-mapped IPv6
	// addresses are reported unmapped.
	Addr netip.AddrPort
	// Local is, when reading, the address the datagram was sent to (the
	// destination, from IP_PKTINFO / IPV6_PKTINFO; the zero value where
	// the platform does not report it) and, when writing, the source
	// address the datagram must leave from (the zero value lets the kernel
	// choose).
	Local netip.Addr
	// IfIndex is the interface a datagram arrived on (0 if unknown); when
	// writing, the interface to send on (0: the kernel chooses).
	IfIndex int
	// Truncated reports that a received datagram was longer than Buf and
	// was cut; its content must not be used.
	Truncated bool
	// Err is the error of a written datagram, nil once it was sent.
	Err error
}

// NewBatch returns a Batch of up to n messages for c. If size > 0, each
// message gets a receive buffer of size bytes, from one allocation.
func NewBatch(c *net.UDPConn, n, size int) (*Batch, error) {
	if n < 1 {
		n = 1
	}
	b, err := newBatch(c, n)
	if err != nil {
		return nil, err
	}
	b.Msgs = make([]Message, n)
	if size > 0 {
		// One spare byte lets the portable reader detect truncation.
		slab := make([]byte, n*(size+1))
		for i := range b.Msgs {
			b.Msgs[i].Buf = slab[i*(size+1) : i*(size+1)+size : (i+1)*(size+1)]
		}
	}
	return b, nil
}
