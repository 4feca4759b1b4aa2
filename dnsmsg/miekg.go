package dnsmsg

import (
	"crypto/tls"
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// MiekgHandler adapts h, a github.com/miekg/dns handler (a dns.ServeMux,
// say), to a Handler, so that it serves on every transport of this
// package, DNS over HTTPS included:
//
//	mux := dns.NewServeMux()
//	mux.HandleFunc("example.org.", answer) // unchanged
//	go dnsmsg.Serve(ctx, udp.Requests(), dnsmsg.MiekgHandler(mux), dnsmsg.ServeConfig{})
//	go dnsmsg.Serve(ctx, tcp.Requests(), dnsmsg.MiekgHandler(mux), dnsmsg.ServeConfig{})
//
// The dns.ResponseWriter that h gets behaves as miekg/dns's own: WriteMsg
// packs and sends (several times over TCP and TLS, for zone transfers;
// once over UDP and HTTPS), Write sends wire bytes, Close closes a TCP or
// TLS connection (and resets an HTTP/2 stream), LocalAddr and RemoteAddr
// are *net.UDPAddr or *net.TCPAddr. Over DNS over TLS it implements
// dns.ConnectionStater. TSIG is not verified (TsigStatus returns nil), and
// Hijack is not supported (it does nothing). A request that does not parse
// never reaches h: it is answered FORMERR.
func MiekgHandler(h dns.Handler) Handler {
	return HandlerFunc(func(r *Request) {
		m, err := r.Msg()
		if err != nil {
			return // Serve answers FORMERR
		}
		h.ServeDNS(&miekgWriter{r: r}, m)
	})
}

// miekgWriter is the dns.ResponseWriter of a request served by a miekg/dns
// handler.
type miekgWriter struct{ r *Request }

func (w *miekgWriter) LocalAddr() net.Addr  { return w.addr(w.r.local) }
func (w *miekgWriter) RemoteAddr() net.Addr { return w.addr(w.r.peer) }

// addr returns a as miekg/dns gives it: a *net.UDPAddr over UDP, else a
// *net.TCPAddr.
func (w *miekgWriter) addr(a netip.AddrPort) net.Addr {
	if w.r.transport == nm.UDP {
		return net.UDPAddrFromAddrPort(a)
	}
	return net.TCPAddrFromAddrPort(a)
}

func (w *miekgWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	return w.r.ReplyWire(b)
}

func (w *miekgWriter) Write(b []byte) (int, error) {
	if err := w.r.ReplyWire(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *miekgWriter) Close() error        { return w.r.closeConversation() }
func (w *miekgWriter) TsigStatus() error   { return nil }
func (w *miekgWriter) TsigTimersOnly(bool) {}
func (w *miekgWriter) Hijack()             {}
func (w *miekgWriter) Network() string     { return networkName(w.r.transport) }

// ConnectionState returns the TLS state of a DNS-over-TLS request's
// connection, and nil for other transports (dns.ConnectionStater).
func (w *miekgWriter) ConnectionState() *tls.ConnectionState {
	c, ok := core.Handle(w.r.h).Socket().(*streamConn)
	if !ok {
		return nil
	}
	st, ok := stream.TLSState(nm.Handle(c.h))
	if !ok {
		return nil
	}
	return &st
}

// networkName is the network miekg/dns names for a transport.
func networkName(t nm.Transport) string {
	switch t {
	case nm.TCP:
		return "tcp"
	case nm.TLS:
		return "tcp-tls"
	case nm.HTTP:
		return "https"
	case nm.QUIC:
		return "quic"
	}
	return "udp"
}
