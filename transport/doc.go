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
// A Batch is not safe for concurrent use; a [Writer] serialises many
// goroutines' writes on one socket and combines them into batches when they
// contend.
package transport
