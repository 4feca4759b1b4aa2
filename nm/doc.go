// Package nm is the network manager of netmgr: worker shards, handles,
// event channels, errors, pause and resume, shutdown and statistics. It is
// BIND 9's netmgr ("rainbow duck") re-thought for Go: callbacks become
// typed channels, libuv becomes Go's net poller, and one event loop per CPU
// becomes one shard per CPU.
//
// # Shards
//
// A Manager owns N shards (one per CPU by default). Every socket and handle
// belongs to one shard for its whole life. On Linux and FreeBSD each shard
// gets its own listening socket (SO_REUSEPORT, SO_REUSEPORT_LB) and the
// kernel spreads the traffic over them; elsewhere, and for sockets given
// by the caller (SocketConfig.PacketConns, Listeners) when there are fewer
// than shards, the shards share the sockets (see Platforms). Each shard has
// a job loop, the reader goroutines of its listening sockets, pools, and
// counters (Manager.ShardStats). With Config.LockThreads or Config.Pin, a
// shard's long-lived goroutines are locked to OS threads, pinned to the
// shard's CPU.
//
// # Platforms
//
// What each system gets:
//
//   - Linux: one socket per shard with SO_REUSEPORT (the kernel spreads
//     datagrams and connections by a hash of the peer's address); recvmmsg
//     and sendmmsg batches; destination and source addresses per datagram
//     (replies leave from the address the client asked); threads pinned to
//     CPUs.
//   - FreeBSD: one socket per shard with SO_REUSEPORT_LB; datagrams one per
//     system call; no destination address: replies on a wildcard socket
//     leave from the address the kernel chooses, so bind each address
//     rather than a wildcard.
//   - macOS, OpenBSD, NetBSD, DragonFly: one socket shared by the shards
//     (SO_REUSEPORT there is not relied on to balance); otherwise as
//     FreeBSD. SharePort sets SO_REUSEPORT.
//   - Windows and others: one socket shared by the shards, datagrams one
//     at a time, no destination address; SharePort is refused.
//
// # Events
//
// Conversations report on receive-only channels of Event. A channel
// delivers 0..n events with Err == nil, then exactly one final event with
// Err != nil, then it is closed; nothing is ever delivered after the final
// event. On client handles, ErrTimedOut ends only the read it answers. The
// final error says how the conversation ended:
//
//	shut down (closed, listener stopped, manager closing) while reading  ErrCanceled
//	shut down while not reading (after ReadStop)                         ErrShuttingDown
//	peer closed                                                          ErrEOF
//	peer reset                                                           ErrConnReset
//	server timeout                                                       ErrTimedOut
//
// A handle that was never read produces no event and is still released.
// Events come from the shard, never from inside Send or Close on the
// caller's stack.
//
// # Handles
//
// A Handle is one conversation, reference counted with Attach and Detach:
// the last Detach ends it and returns its state to its socket's pool, where
// it keeps its user value (SetData) for the next conversation, after the
// value's Reset hook. A listener gives the receiver of each request one
// reference, which the receiver must Detach.
//
// A Handle is a small value that carries a generation. Once its last
// reference is gone it is released for good: Send and SendAsync return
// ErrReleased, Read returns a channel whose only event is ErrReleased,
// Close and ReadStop do nothing, the addresses are the zero value, and
// Attach, Detach and SetData panic — every time, even after the state
// behind it serves another peer. A reply can never reach a client it was
// not meant for, and one Detach too many cannot release somebody else's
// request. Keep the channel Read returned if you want a conversation's
// final event after releasing it.
//
// PeerAddr and LocalAddr are the conversation's addresses as the client
// sees them: behind a load balancer that sends PROXY v2 headers
// (UDPConfig.Proxy, stream.Config.Proxy), the header's; RealPeerAddr and
// RealLocalAddr are always the socket's own (for a UDP request, the
// address the datagram was sent to, even on a wildcard listener).
//
// # Sockets
//
// Listeners take a SocketConfig (UDPConfig.Socket, stream.Config.Socket):
// the address family ("0.0.0.0" binds IPv4 only, "[::]" both families
// unless Family is "ip6"), socket options through a Control hook, sockets
// already open (from a parent process or systemd), and port sharing. A
// listener never silently shares its port: when any socket, of this
// process or another, holds the address, listening fails with an error
// matching syscall.EADDRINUSE, unless SharePort asks to share (for a
// hand-over on restart).
//
// On a wildcard UDP listener, each request's LocalAddr is the address the
// client sent to and InterfaceIndex the interface it came in on, and the
// reply leaves from that address (Linux; elsewhere LocalAddr is the
// wildcard and the kernel chooses the source, so bind each address).
//
// # Pause
//
// Pause stops every shard at a safe point: until Resume no event is
// delivered and no job runs. It is meant for changing configuration
// atomically. A second Pause before Resume fails with ErrPaused.
//
// # Limits
//
// UDP listeners never wait for a slow consumer: when a listener's queue is
// full, datagrams are dropped and counted (Totals.Dropped). Datagrams
// larger than UDPConfig.MaxSize, or refused by UDPConfig.Filter, are dropped
// and counted too.
//
// # Shutdown
//
// Manager.Close stops every listener, gives every live handle its final
// event, and returns once every goroutine the library started has ended.
//
// # Statistics
//
// Manager.Stats returns every transport's totals and Manager.ShardStats
// one shard's. Each listener, and each upstream of a dnsmsg.Client, also
// counts on its own: Manager.Endpoints lists them with their totals and a
// latency histogram, named by their configuration (UDPConfig.Name,
// stream.Config.Name, dnsmsg.ServerConfig.Name, dnsmsg.HTTPConfig.Name,
// dnsmsg.ClientConfig.Name) or, without a name, by their address; a listener's
// Stats returns its own. A listener's latency runs from a request's
// delivery to its first reply (Send, SendAsync); a client's from a query's
// send to its reply. Manager.Latency adds them up by transport. Counting
// costs one atomic add per counter on the shard's own cache line, and
// a latency a read of the monotonic clock at the reply (and one at the
// request, or one per batch of UDP requests read together) and three
// atomic operations: no lock and no allocation. A closed endpoint leaves
// Endpoints but its counts stay in Stats and Latency.
//
// # Logs
//
// The library logs through Config.Logger (log/slog), each record with a
// constant message and structured attributes: addr (the listener's
// address), peer (the client's), transport, err, and counts. What an
// operator acts on is at Warn and Info; what one bad request or
// conversation did is at Debug, and counted (Totals).
//
//	Warn   a listener cannot bind: "nm: cannot listen" (UDP), "stream: cannot
//	       listen" (TCP, TLS; DNS over TCP, TLS and HTTPS), "dnsmsg: cannot
//	       listen" (DoQ); addr, transport, err
//	Warn   a limit is reached: a connection refused at the listener's cap
//	       (max) or by admission control (reason: per-client connections,
//	       rate, clients tracked); requests shed because the consumers fell
//	       behind (DNS over TCP, TLS, HTTPS, QUIC), or UDP requests dropped
//	       at a full queue (dropped: one record per read, not per datagram);
//	       DoQ connections refused for excessive load
//	Warn   a flood or a peer cut off: an output that filled because the
//	       peer does not read (stream, DoH), HTTP/2 floods (frames that carry
//	       no request, output the peer provoked), a stream request over the
//	       size limit or the buffered-bytes cap (the connection cut), DoH
//	       bodies over their cap (413); the records name the reason
//	Info   TLS handshakes that fail ("stream: TLS handshake failed"; peer,
//	       err): sampled by the rate limit, the count of the others in
//	       "suppressed"
//	Info   drains: Manager.Shutdown ("nm: shutdown begins", with the
//	       listeners, and "nm: shutdown ended") and each listener's Shutdown
//	       ("nm: UDP listener drain begins", "dnsmsg: listener drain begins",
//	       with the requests or connections open; "... ended"), the end with
//	       drained (false: cut at ctx's end, with err) and took
//	Debug  one bad frame, PROXY header or query; a request unanswered past
//	       its timeout; a peer that does not take its reply in time
//
// Also: "nm: cannot pin shard" (Warn), "nm: job panicked" (Error),
// shards sharing the sockets given (Info), "dnsmsg: handler panicked"
// (Error, with the stack), "dnsmsg: upstream down" (Warn, a Client's
// upstream marked down).
//
// Every record goes through a rate limit of the manager's, at every level
// (an attack can provoke Debug records as well as Warn): per message,
// 10 records at once, then 2 a second. The records dropped cost no lock
// and no allocation in the limiter, and the next record of that message
// passed carries their number as "suppressed". Beyond 256 distinct
// messages, the others share one limit.
package nm
