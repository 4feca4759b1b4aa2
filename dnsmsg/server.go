package dnsmsg

import (
	"context"
	"net/netip"

	"github.com/rainbowduck/netmgr/nm"
)

// ServerConfig configures a listener. The zero value is ready to use; a
// config must not be modified after use.
type ServerConfig struct {
	// MaxUDPSize is the largest UDP request accepted; longer ones are dropped
	// and counted. If zero, 4096 bytes.
	MaxUDPSize int
	// UDPBatch is how many datagrams a shard reads per system call. If
	// zero, 32.
	UDPBatch int
	// Queue is the capacity of the request channel; when it is full, new
	// UDP requests are dropped and counted. If zero, 1024 per shard.
	Queue int
}

// Listener is a DNS server on one address. Its methods are safe for
// concurrent use.
type Listener struct {
	addr  netip.AddrPort
	ch    <-chan nm.Event
	close func() error
}

// ListenUDP serves DNS over UDP on addr, with one socket per shard of m.
// ctx bounds the binding only.
func ListenUDP(ctx context.Context, m *nm.Manager, addr string, cfg ServerConfig) (*Listener, error) {
	l, err := nm.ListenUDP(ctx, m, addr, nm.UDPConfig{
		MaxSize: cfg.MaxUDPSize,
		Batch:   cfg.UDPBatch,
		Queue:   cfg.Queue,
		Filter:  func(b []byte, _ netip.AddrPort) error { return checkRequest(b) },
	})
	if err != nil {
		return nil, err
	}
	return &Listener{addr: l.Addr(), ch: l.Datagrams(), close: l.Close}, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Requests returns the channel of requests: one event per DNS message, each
// with a handle to reply on (the receiver owns one reference), then, after
// Close or the manager's Close, one final event with nm.ErrCanceled; then
// the channel is closed.
func (l *Listener) Requests() <-chan nm.Event { return l.ch }

// Close stops the listener; the final event follows on Requests. Close is
// idempotent and does not wait.
func (l *Listener) Close() error { return l.close() }
