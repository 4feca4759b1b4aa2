package nm

import (
	"net/netip"

	"github.com/rainbowduck/netmgr/internal/core"
)

// replySource returns the source address and interface a reply on the
// request handle h must be sent from: the address the request was sent to,
// so that it leaves from the address the client asked even on a wildcard
// listener. The interface is given only where the address alone does not
// name one (IPv6 link-local); elsewhere the route to the peer chooses it,
// so replies still leave when the way back is another interface.
func replySource(h core.Handle) (netip.Addr, int) {
	src := h.RealLocal().Addr()
	if src.IsUnspecified() {
		return netip.Addr{}, 0
	}
	if src.IsLinkLocalUnicast() {
		return src, h.Interface()
	}
	return src, 0
}
