package nm

import (
	"context"
	"errors"
	"log/slog"

	"github.com/rainbowduck/netmgr/internal/core"
)

// Config configures a Manager. The zero value is ready to use.
type Config struct {
	// Workers is the number of shards. If zero, runtime.GOMAXPROCS(0).
	Workers int
	// LockThreads locks each shard's long-lived goroutines (its job loop and
	// its listening sockets' readers) to OS threads. If false, they run as
	// ordinary goroutines, which is usually faster under Go's scheduler.
	LockThreads bool
	// Pin binds each shard's locked threads to one CPU (Linux; a no-op
	// elsewhere). It implies LockThreads. Shard i gets CPUs[i%len(CPUs)],
	// or, if CPUs is empty, the i-th CPU the process may run on.
	Pin  bool
	CPUs []int
	// Logger receives the library's log records: Warn and Info at the
	// events an operator acts on (a bind that fails, a limit reached, a
	// flood cut off, TLS handshakes that fail, a drain's progress), Debug
	// for single bad requests and conversations (see "Logs" in the package
	// documentation). The manager wraps its handler in a rate limit per
	// message, at every level, so that an attack cannot flood the log: 10
	// records at once, then 2 a second, the next record passed saying with
	// a "suppressed" attribute how many were dropped. If nil, nothing is
	// logged.
	Logger *slog.Logger
}

// Manager owns the shards and every socket, listener and handle created
// with it. Its methods are safe for concurrent use.
//
// Close shuts everything down; when it returns no goroutine the manager
// started is left running.
type Manager core.Manager

func (m *Manager) core() *core.Manager { return (*core.Manager)(m) }

// New starts a manager with cfg's shards.
func New(cfg Config) (*Manager, error) {
	if cfg.Workers < 0 {
		return nil, errors.New("nm: negative worker count")
	}
	cm, err := core.New(core.Config(cfg))
	return (*Manager)(cm), err
}

// Workers returns the number of shards.
func (m *Manager) Workers() int { return m.core().Workers() }

// Stats returns a snapshot of every shard's counters added up.
func (m *Manager) Stats() Stats { return statsOf(m.core().Stats()) }

// ShardStats returns a snapshot of shard i's counters, 0 <= i < Workers().
func (m *Manager) ShardStats(i int) Stats { return statsOf(m.core().Shard(i).Stats()) }

// Shutdown drains every listener of the manager at once, as their own
// Shutdown does (they stop taking new requests and let those delivered be
// answered), until they have all drained or ctx ends, then closes the
// manager (Close). Connections that are not a listener's requests (raw
// stream connections, clients) are not drained: Close ends them. It
// returns the first error of a listener's drain (ctx's error, when ctx
// ended first), or nil; on a closed manager it does nothing.
func (m *Manager) Shutdown(ctx context.Context) error { return m.core().Shutdown(ctx) }

// Close shuts the manager down: listeners stop, every live handle gets its
// final event, pending sends fail, and every goroutine the library started
// has returned when Close returns. A paused manager is resumed first.
// Close is idempotent and always returns nil.
func (m *Manager) Close() error { return m.core().Close() }

// Pause stops every shard at a safe point and returns when all are stopped:
// until Resume, no event is delivered and no job runs. A second Pause before
// Resume returns ErrPaused. Pause must not be called while handling an
// event of the manager on the goroutine that would have to resume it.
func (m *Manager) Pause() error { return m.core().Pause() }

// Resume restarts the shards stopped by Pause. Without a Pause it returns
// ErrNotPaused.
func (m *Manager) Resume() error { return m.core().Resume() }
