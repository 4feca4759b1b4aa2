// Package dnsmsg serves and sends DNS messages over the transports of
// netmgr with one programming model: every data event carries exactly one
// complete DNS message in wire format.
//
// # Servers
//
// A listener delivers requests on the channel returned by Requests: each
// event holds one message and a handle to reply on, then, when the listener
// is closed, one final event, then the channel is closed. The receiver owns
// one reference to each request's handle and must Detach it when done,
// usually right after sending the reply:
//
//	l, _ := dnsmsg.ListenUDP(ctx, mgr, "127.0.0.1:5300", dnsmsg.ServerConfig{})
//	for ev := range l.Requests() {
//		if ev.Err != nil {
//			break // the final event
//		}
//		reply := answer(ev.Data)
//		ev.Handle.Send(reply)
//		ev.Handle.Detach()
//	}
//
// Datagrams that cannot be DNS requests (shorter than a header, or with the
// QR bit set) are dropped and counted, never delivered.
//
// # Clients
//
// A Conn is a client conversation. Each Read yields exactly one event: a
// reply, ErrTimedOut when the read timeout passes first (the Conn stays
// usable: read again, or give up), or the final error. Replies whose ID
// matches no query sent on the Conn are discarded and counted. Exchange
// sends one query and waits for its reply.
//
// # Limits
//
// UDP datagrams longer than ServerConfig.MaxUDPSize (default 4096 bytes) are
// dropped and counted; a listener's queue is bounded and, when full, new
// datagrams are dropped and counted: UDP ingress never waits for a slow
// consumer.
package dnsmsg
