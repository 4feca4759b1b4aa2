// Package transport opens and drives the sockets that the rest of netmgr
// stands on, over Go's own net poller (no cgo).
//
// It knows nothing of managers, handles or DNS: it binds UDP sockets (one per
// shard with SO_REUSEPORT where the platform has it), reads and writes
// datagrams in batches (recvmmsg and sendmmsg on Linux, one at a time
// elsewhere), sets socket options and pins threads to CPUs.
//
// # Batches
//
// A [Batch] owns preallocated buffers and kernel message headers for one
// socket and one direction. Reading or writing a batch allocates nothing.
// A Batch is not safe for concurrent use: its user serialises the writes
// of many goroutines (package nm queues replies and writes them in one
// batch).
package transport
