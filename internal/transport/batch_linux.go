package transport

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batch reads or writes up to len(Msgs) datagrams on one UDP socket in one
// system call (recvmmsg or sendmmsg). Each message has its own control
// data: reading reports its destination address and interface
// (IP_PKTINFO, IPV6_PKTINFO, enabled on the socket by NewBatch), writing
// a message with Local set makes it leave from that address. A Batch is
// not safe for concurrent use; one Batch serves one direction of one
// socket.
type Batch struct {
	// Msgs holds the messages; Read fills Msgs[:n], Write sends Msgs[:n].
	Msgs []Message

	conn  *net.UDPConn
	rc    syscall.RawConn
	v6    bool // the socket is AF_INET6: destinations are encoded as such
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // oobSize bytes of control data per message, one allocation

	// State of the call in progress, shared with the RawConn closures.
	count   int
	off     int
	errno   syscall.Errno
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

func newBatch(c *net.UDPConn, n int) (*Batch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &Batch{
		conn:  c,
		rc:    rc,
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*oobSize),
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr == nil {
			_, b.v6 = sa.(*unix.SockaddrInet6)
			serr = enablePktinfo(int(fd), b.v6)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
	}
	b.readFn = b.doRead
	b.writeFn = b.doWrite
	return b, nil
}

// Read blocks until at least one datagram arrives and returns how many of
// Msgs it filled, or the socket's error (a deadline, net.ErrClosed).
func (b *Batch) Read() (int, error) {
	for i := range b.Msgs {
		m := &b.Msgs[i]
		h := &b.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Control = &b.oob[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
		b.iovs[i].Base = unsafe.SliceData(m.Buf)
		b.iovs[i].SetLen(len(m.Buf))
	}
	b.count, b.errno = 0, 0
	if err := b.rc.Read(b.readFn); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Source: b.conn.LocalAddr(), Err: b.errno}
	}
	for i := 0; i < b.count; i++ {
		m := &b.Msgs[i]
		m.N = int(b.hdrs[i].Len)
		m.Truncated = b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
		m.Addr = decodeAddr(&b.names[i], b.hdrs[i].Hdr.Namelen)
		decodePktinfo(m, b.oob[i*oobSize:][:b.hdrs[i].Hdr.Controllen])
	}
	return b.count, nil
}

func (b *Batch) doRead(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(len(b.Msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.count = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			b.errno = e
			return true
		}
	}
}

// Write sends Msgs[:n], setting each message's Err. It returns the first
// error that stopped the socket (a deadline, net.ErrClosed); errors of
// single datagrams are only reported in their Err.
func (b *Batch) Write(n int) error {
	for i := 0; i < n; i++ {
		m := &b.Msgs[i]
		m.Err = nil
		h := &b.hdrs[i].Hdr
		if m.Addr.IsValid() {
			h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			h.Namelen = b.encodeAddr(&b.names[i], m.Addr)
		} else {
			h.Name, h.Namelen = nil, 0
		}
		h.Control, h.Controllen = nil, 0
		if m.Local.IsValid() {
			if k := encodePktinfo(b.oob[i*oobSize:(i+1)*oobSize], m, b.v6); k > 0 {
				h.Control = &b.oob[i*oobSize]
				h.SetControllen(k)
			}
		}
		h.Flags = 0
		b.iovs[i].Base = unsafe.SliceData(m.Buf)
		b.iovs[i].SetLen(len(m.Buf))
	}
	b.count, b.off = n, 0
	if err := b.rc.Write(b.writeFn); err != nil {
		for i := b.off; i < n; i++ {
			b.Msgs[i].Err = err
		}
		return err
	}
	return nil
}

func (b *Batch) doWrite(fd uintptr) bool {
	for b.off < b.count {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])),
			uintptr(b.count-b.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.off += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			// The first unsent datagram failed; skip it and go on.
			b.Msgs[b.off].Err = &net.OpError{Op: "write", Net: "udp", Source: b.conn.LocalAddr(), Err: e}
			b.off++
		}
	}
	return true
}

func decodeAddr(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

func (b *Batch) encodeAddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) uint32 {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	binary.BigEndian.PutUint16(port[:], ap.Port())
	if b.v6 {
		sa.Family = unix.AF_INET6
		sa.Flowinfo = 0
		sa.Addr = ap.Addr().As16()
		sa.Scope_id = 0
		return unix.SizeofSockaddrInet6
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = unix.AF_INET
	sa4.Addr = ap.Addr().Unmap().As4()
	sa4.Zero = [8]byte{}
	return unix.SizeofSockaddrInet4
}
