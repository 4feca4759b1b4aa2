package transport

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize is the control buffer of each message of a Batch. Reading needs
// room for IP_PKTINFO and IPV6_PKTINFO together (a dual-stack socket gets
// both for an IPv4 datagram: 32 + 40 bytes); the rest is slack for options
// a Control hook may turn on. Control data that does not fit is cut by the
// kernel (MSG_CTRUNC) and only what fits is decoded.
const oobSize = 128

// enablePktinfo asks the kernel to report each datagram's destination and
// interface: IP_PKTINFO (on an AF_INET6 socket too, for IPv4 peers of a
// dual-stack socket) and, on AF_INET6 sockets, IPV6_RECVPKTINFO.
func enablePktinfo(fd int, v6 bool) error {
	err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	if !v6 {
		return err
	}
	// A v6-only socket may refuse IP_PKTINFO; it never sees IPv4 anyway.
	return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
}

// decodePktinfo sets m.Local and m.IfIndex from a received message's
// control data. IP_PKTINFO wins over IPV6_PKTINFO when both are present;
// addresses are reported unmapped.
func decodePktinfo(m *Message, oob []byte) {
	m.Local, m.IfIndex = netip.Addr{}, 0
	for len(oob) >= unix.SizeofCmsghdr {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if uint64(c.Len) < unix.SizeofCmsghdr || uint64(c.Len) > uint64(len(oob)) {
			return
		}
		data := oob[unix.CmsgLen(0):c.Len]
		switch {
		case c.Level == unix.IPPROTO_IP && c.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			m.Local, m.IfIndex = netip.AddrFrom4(pi.Addr), int(pi.Ifindex)
			if m.Local.IsMulticast() || m.Local == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				// Sent to a group or broadcast: answer from our own address.
				m.Local = netip.AddrFrom4(pi.Spec_dst)
			}
			return
		case c.Level == unix.IPPROTO_IPV6 && c.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			m.Local, m.IfIndex = netip.AddrFrom16(pi.Addr).Unmap(), int(pi.Ifindex)
			if m.Local.IsMulticast() {
				m.Local = netip.Addr{} // no unicast address to answer from
			}
		}
		oob = oob[min(unix.CmsgSpace(len(data)), len(oob)):]
	}
}

// encodePktinfo writes into oob the control message that makes a datagram
// leave from m.Local (and on m.IfIndex if set) and returns its length:
// IP_PKTINFO on an AF_INET socket, IPV6_PKTINFO on an AF_INET6 one (with
// an IPv4-mapped source for IPv4 peers of a dual-stack socket). It writes
// nothing and returns 0 for an IPv6 source on an AF_INET socket.
func encodePktinfo(oob []byte, m *Message, v6 bool) int {
	if !v6 && !m.Local.Unmap().Is4() {
		return 0 // an IPv6 source on an IPv4 socket: the kernel chooses
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.CmsgLen(0)])
	if !v6 {
		c.Level, c.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		c.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		*(*unix.Inet4Pktinfo)(data) = unix.Inet4Pktinfo{Ifindex: int32(m.IfIndex), Spec_dst: m.Local.Unmap().As4()}
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	c.Level, c.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	c.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	*(*unix.Inet6Pktinfo)(data) = unix.Inet6Pktinfo{Addr: m.Local.As16(), Ifindex: uint32(m.IfIndex)}
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}
