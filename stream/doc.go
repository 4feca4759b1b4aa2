// Package stream gives raw byte streams over TCP and TLS behind one
// interface: nm handles. Switching a listener or a dialer from TCP to TLS
// changes one call (Listen to ListenTLS, Dial to DialTLS).
//
// # Events
//
// Listener.Conns delivers one event per accepted connection (after its TLS
// handshake), then a final nm.ErrCanceled when the listener is closed.
// h.Read() starts reading a connection and returns its channel: 0..n data
// events, then exactly one final event, then the channel is closed:
//
//	shut down while reading (Close, last Detach, manager closing)  nm.ErrCanceled
//	shut down while not reading (after ReadStop)                    nm.ErrShuttingDown
//	peer closed (FIN, or TLS close_notify)                          nm.ErrEOF
//	peer reset                                                      nm.ErrConnReset
//	server initial or idle timeout, or write timeout               nm.ErrTimedOut
//	output bound reached (a peer that does not read)                nm.ErrOutputFull
//
// A data event's Data is valid until the next receive from the channel. On
// a client, a read timeout (Timeouts.Read) delivers nm.ErrTimedOut and stops
// reading without ending the connection; Read resumes. After nm.ErrEOF the
// connection stays open for writing (half-close) until the handle is closed.
// A handle never read gets no event and is released at shutdown.
//
// # Sending
//
// No send ever waits for the peer. Send (and SendPrefixed) copies the
// message into the connection's output and returns; when nobody is writing
// it first makes one write attempt that does not wait, so at low load a
// message leaves at once from the caller's goroutine. SendAsync (and
// SendPrefixedAsync) queues the message without copying it, and done
// receives the outcome from the connection's writer goroutine, never on the
// caller's stack; b must not change until then. Whatever the socket does
// not take at once is written by the writer goroutine, everything waiting
// together: one writev on TCP, as few records as possible on TLS.
//
// Sends on one handle go out in order, each completes exactly once, and a
// queued send holds a reference to its handle, so the last Detach closes
// the connection only after them. Close (and the last Detach) stops reading
// and sending at once but lets what was sent before go out, within the
// write timeout, before the socket closes; the manager's Close drops it
// (queued sends fail with nm.ErrCanceled). A send after Close fails with
// nm.ErrClosed.
//
// # Protocols on streams
//
// SendPrefixed writes a prefix (a length, say) and a message as one send.
// Package dnsmsg frames DNS over TCP and TLS on this package's listeners:
// it takes each connection's bytes on the connection's own goroutine
// instead of data events, and stops the initial and idle timers while
// requests are being answered; for DNS over HTTPS it takes whole
// connections (a net.Conn, after the accept filter, the quota and the TLS
// handshake). Those hooks are internal to the module. DialConn is the
// client side of a whole connection: a connected net.Conn, TLS sessions
// resumed as for DialTLS.
//
// # Behind a load balancer
//
// With Config.Proxy a listener expects a PROXY protocol v2 header (package
// proxyproto) at the start of every connection, before the TLS handshake or,
// with ProxyInTLS, as the first bytes inside it, from the peers the policy
// allows. It must come within the initial timeout; only then are the accept
// filter (with the header's addresses) and the delivery run. Handles report
// the header's addresses as PeerAddr and LocalAddr and the socket's as
// RealPeerAddr and RealLocalAddr; ProxyHeader returns the header with its
// TLVs. Dialers send Config.ProxyHeader first.
//
// # Limits
//
// A server connection stops reading while more than Config.Backpressure
// bytes (64 KiB) are unsent, and resumes below it (DNS over TCP checks it
// between the messages of one read too), so a peer that does not read cannot
// grow our memory. A connection's output (replies queued, TLS records not
// yet written) is bounded by Config.MaxOutput (256 KiB): the send that
// would pass it fails with nm.ErrOutputFull and the connection is reset,
// counted OutputFull in nm.Totals, with final event nm.ErrOutputFull. A
// peer that takes nothing for Timeouts.Write (30 s) is reset too, counted
// WriteTimeouts, with final event nm.ErrTimedOut; queued sends then fail.
// Writes counts write system calls and Sent the messages they carried;
// Reads counts reads that returned data.
//
// Config.MaxConns caps a listener's connections; at the cap it stops
// accepting (connections wait in the kernel's backlog) or, with
// RefuseAtCap, closes new ones at once, counted Refused. Per client (an
// address prefix: /24 for IPv4, /56 for IPv6 by default),
// Config.MaxConnsPerClient caps concurrent connections and
// Config.ClientRate new connections per second; a connection over them is
// closed before any read or handshake, counted Refused. The slots are
// released exactly once, however the connection ends.
package stream
