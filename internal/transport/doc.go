// Package transport opens and drives the sockets that the rest of netmgr
// stands on, over Go's own net poller (no cgo).
//
// It knows nothing of managers, handles or DNS: it binds listening sockets
// (one per shard where the kernel spreads traffic over them), reads and
// writes datagrams in batches with their source and destination addresses,
// sets socket options and pins threads to CPUs.
//
// # Batches
//
// A [Batch] owns preallocated buffers, kernel message headers and control
// data for one socket and one direction. Reading or writing a batch
// allocates nothing. A Batch is not safe for concurrent use.
//
// # Addresses
//
// On Linux a Batch reports each received datagram's destination address
// and interface ([Message].Local, IfIndex; IP_PKTINFO and IPV6_PKTINFO,
// IPv4 on a dual-stack socket included, unmapped), and a message written
// with Local set leaves from that address, so that a server bound to a
// wildcard address answers from the address each client asked.
//
// [ListenUDP] and [ListenTCP] refuse an address that any other socket holds
// (an error matching syscall.EADDRINUSE), unless [ListenConfig].SharePort
// asks to share it. An IPv4 address, 0.0.0.0 included, binds IPv4 only;
// "[::]" and an empty host bind both families unless Family says otherwise.
//
// # Platforms
//
// What each system gets:
//
//   - Linux: one socket per shard with SO_REUSEPORT (the kernel spreads
//     datagrams and connections by a hash of the peer's address); recvmmsg
//     and sendmmsg batches; destination and source addresses per datagram;
//     threads pinned to CPUs.
//   - FreeBSD: one socket per shard with SO_REUSEPORT_LB; datagrams one per
//     system call; no destination address (Local is zero): replies on a
//     wildcard socket leave from the address the kernel chooses, so bind
//     each address rather than a wildcard.
//   - macOS, OpenBSD, NetBSD, DragonFly: one socket shared by the shards
//     (SO_REUSEPORT there is not relied on to balance); otherwise as
//     FreeBSD. SharePort sets SO_REUSEPORT.
//   - Windows and others: one socket shared by the shards, datagrams one
//     at a time, no destination address; SharePort is refused.
package transport
