// Package streamhook is what package dnsmsg asks of package stream's
// connections beyond stream's own API: handing a listener's connections
// to a consumer of their bytes or to a server of whole connections,
// pacing a consumer by the connection's output, and counting. It is
// internal: users of stream see none of it.
//
// Package stream sets the functions when it initializes, and reads the
// Hooks from the context given to stream.Listen and stream.ListenTLS.
package streamhook

import (
	"context"
	"net"
	"net/netip"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/proxyproto"
)

// A Consumer takes a server connection's bytes on the connection's own
// goroutine, in place of data events: protocols framed on streams (package
// dnsmsg) use it to turn bytes into messages without a goroutine and a
// channel hand-off more per connection.
type Consumer interface {
	// Data is called with each chunk read; b is valid until Data returns.
	// Data may block (the connection reads nothing meanwhile, so TCP pushes
	// back on the peer) but must return soon after stop is closed. A
	// non-nil error ends reading and becomes the final error; the
	// connection stays open for sends in progress until its handle's last
	// reference goes, as after nm.ErrEOF.
	Data(b []byte) error
	// Final is called once, after the last Data, with the final error
	// (the table in package stream's documentation; nm.ErrCanceled for a
	// local shutdown).
	Final(err error)
}

// A Server takes whole connections from a listener: protocols that need a
// net.Conn of their own, such as HTTP/2 for DNS over HTTPS.
//
// ServeConn is called on the connection's own goroutine, which the manager
// waits for, after the accept filter, the quota, the PROXY header and the
// TLS handshake (all within the initial timeout). It owns c until it
// returns; the listener then closes the connection and releases the quota
// slot. The connection is closed under ServeConn when the listener or the
// manager closes, so ServeConn must return soon after its reads and writes
// fail.
type Server interface {
	ServeConn(c *ServedConn)
}

// ServedConn is a connection given to a Server.
type ServedConn struct {
	net.Conn // the connection: the TCP one, or the *tls.Conn over it
	Shard    *core.Shard
	// Local and Peer are the connection's addresses as a PROXY header gave
	// them, or else the socket's own, which RealLocal and RealPeer are.
	Local, Peer         netip.AddrPort
	RealLocal, RealPeer netip.AddrPort
	// Proxy is the PROXY header, or nil.
	Proxy *proxyproto.Header
}

// Hooks change what a stream listener does with the connections it
// accepts.
type Hooks struct {
	// Consume, if set, makes the listener hand each connection, after its
	// TLS handshake, to the Consumer it returns instead of delivering it
	// on Conns: the connection reads at once and gives its bytes to the
	// Consumer on its own goroutine. stop is closed when the connection
	// shuts down. The Consumer owns the handle's reference; a nil
	// Consumer closes the connection.
	Consume func(h core.Handle, stop <-chan struct{}) Consumer
	// Serve, if set, makes the listener give each connection, as a
	// net.Conn, to Serve.ServeConn instead of delivering it on Conns;
	// Consume is then ignored.
	Serve Server
	// Ended, if set, is called once when the listener has ended: it was
	// closed, its accept loops and the connections not yet handed over
	// are gone, and its statistics are closed.
	Ended func()
}

type hooksKey struct{}

// With returns ctx carrying h for stream.Listen and stream.ListenTLS.
func With(ctx context.Context, h Hooks) context.Context {
	return context.WithValue(ctx, hooksKey{}, h)
}

// From returns the Hooks ctx carries, or none.
func From(ctx context.Context) Hooks {
	h, _ := ctx.Value(hooksKey{}).(Hooks)
	return h
}

type shardKey struct{}

// WithShard returns ctx asking stream.DialConn to count the connection on
// shard s.
func WithShard(ctx context.Context, s *core.Shard) context.Context {
	return context.WithValue(ctx, shardKey{}, s)
}

// ShardFrom returns the shard ctx asks for, or nil.
func ShardFrom(ctx context.Context) *core.Shard {
	s, _ := ctx.Value(shardKey{}).(*core.Shard)
	return s
}

// Set by package stream when it initializes.
var (
	// WaitOutput is for a Consumer's Data, on the connection's reader
	// goroutine: it waits while more than stream.Config.Backpressure bytes
	// of the connection's output are unsent, so that a peer that does not
	// read stops being served between two messages of one read, not only
	// between reads. It returns false if the connection shuts down first.
	// Other handles do not wait.
	WaitOutput func(h core.Handle) bool
	// SetFramed tells a connection that the protocol over it counts the
	// messages it frames (package dnsmsg counts DNS messages as Received):
	// its data events are then no longer counted as Received. Reads still
	// counts each read. Other handles ignore it.
	SetFramed func(h core.Handle)
	// SetBusy counts the requests of a server connection being answered
	// (delta +1 when one is taken, -1 when it is done): while any is, the
	// initial and idle timers do not run; the idle timer starts again when
	// the last one is done. Other handles ignore it.
	SetBusy func(h core.Handle, delta int)
)
