package core

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/transport"
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
	// Logger receives the library's diagnostics. If nil, they are dropped.
	Logger *slog.Logger
}

// Manager owns the shards and every socket, listener and handle created
// with it. Its methods are safe for concurrent use.
//
// Close shuts everything down; when it returns no goroutine the manager
// started is left running.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	shards []*Shard
	next   atomic.Uint32 // round-robin shard choice for clients

	ctx    context.Context // canceled when Close starts
	cancel context.CancelFunc

	mu      sync.Mutex
	closing bool                    // guarded by mu; no new goroutine or socket after it is set
	live    map[Shutdowner]struct{} // live sockets, shut down by Close; guarded by mu
	drains  map[*drainFunc]struct{} // listeners' drains, run by Shutdown; guarded by mu
	wg      sync.WaitGroup          // every goroutine started by the library; Add only under mu while !closing

	pmu    sync.Mutex // serialises Pause, Resume and the paused part of Close
	paused bool       // guarded by pmu

	closeOnce sync.Once

	meterReg
}

// New starts a manager with cfg's shards.
func New(cfg Config) (*Manager, error) {
	if cfg.Workers < 0 {
		return nil, errors.New("nm: negative worker count")
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Pin {
		cfg.LockThreads = true
		if len(cfg.CPUs) == 0 {
			cfg.CPUs = transport.AllowedCPUs()
		}
	}
	log := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		log = slog.New(newRateHandler(cfg.Logger.Handler(), LogBurst, LogRate, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: log, ctx: ctx, cancel: cancel, live: make(map[Shutdowner]struct{}), drains: make(map[*drainFunc]struct{})}
	m.meterReg.meters = make(map[*Meter]struct{})
	m.shards = make([]*Shard, cfg.Workers)
	for i := range m.shards {
		m.shards[i] = newShard(m, i)
	}
	for _, s := range m.shards {
		s.start()
	}
	return m, nil
}

// Workers returns the number of shards.
func (m *Manager) Workers() int { return len(m.shards) }

// Shard returns shard i, 0 <= i < Workers().
func (m *Manager) Shard(i int) *Shard { return m.shards[i] }

// NextShard returns shards in turn, to spread client sockets.
func (m *Manager) NextShard() *Shard {
	return m.shards[int(m.next.Add(1)-1)%len(m.shards)]
}

// Done returns a channel closed when the manager starts closing.
func (m *Manager) Done() <-chan struct{} { return m.ctx.Done() }

// Context returns a context canceled when the manager starts closing, to
// bound work such as a dial that must not outlive the manager.
func (m *Manager) Context() context.Context { return m.ctx }

// Closing reports whether the manager has started closing.
func (m *Manager) Closing() bool { return m.ctx.Err() != nil }

// Logger returns the manager's logger: Config.Logger with the rate limit
// per message (a logger that drops everything if Config.Logger is nil).
func (m *Manager) Logger() *slog.Logger { return m.log }

// Stats returns a snapshot of every shard's counters added up.
func (m *Manager) Stats() Stats {
	var st Stats
	m.meterMu.Lock()
	defer m.meterMu.Unlock()
	m.foldQuiet()
	for _, s := range m.shards {
		ss := m.shardStatsLocked(s)
		st.add(&ss)
	}
	return st
}

// Track registers shutdown to be called when the manager closes, and
// returns the function that unregisters it. It fails with ErrShuttingDown if
// the manager is closing. Socket implementations call it; users need not.
func (m *Manager) Track(shutdown func()) (untrack func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil, ErrShuttingDown
	}
	key := &shutdownFunc{shutdown}
	m.live[key] = struct{}{}
	return func() { m.UntrackSocket(key) }, nil
}

type drainFunc struct{ fn func(context.Context) error }

// TrackDrain registers drain, a listener's Shutdown, to be run by the
// manager's Shutdown, and returns the function that unregisters it (a
// listener's Close calls it). On a closing manager it registers nothing.
// Listener implementations call it; users need not.
func (m *Manager) TrackDrain(drain func(context.Context) error) (untrack func()) {
	return m.onShutdown(drain)
}

func (m *Manager) onShutdown(drain func(context.Context) error) (untrack func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return func() {}
	}
	key := &drainFunc{drain}
	m.drains[key] = struct{}{}
	return func() {
		m.mu.Lock()
		delete(m.drains, key)
		m.mu.Unlock()
	}
}

// Shutdown drains every listener of the manager at once, as their own
// Shutdown does (they stop taking new requests and let those delivered be
// answered), until they have all drained or ctx ends, then closes the
// manager (Close). Connections that are not a listener's requests (raw
// stream connections, clients) are not drained: Close ends them. It
// returns the first error of a listener's drain (ctx's error, when ctx
// ended first), or nil; on a closed manager it does nothing.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	drains := make([]*drainFunc, 0, len(m.drains))
	for d := range m.drains {
		drains = append(drains, d)
	}
	m.mu.Unlock()
	start, logged := time.Now(), !m.Closing()
	if logged {
		m.log.Info("nm: shutdown begins", "listeners", len(drains))
	}
	errs := make(chan error, len(drains))
	for _, d := range drains {
		go func() { errs <- d.fn(ctx) }() // returns once drained or ctx ends
	}
	var err error
	for range drains {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if logged {
		m.log.Info("nm: shutdown ended", DrainEnded(start, err)...)
	}
	m.Close()
	return err
}

// Shutdowner is a socket the manager shuts down when it closes.
type Shutdowner interface{ Shutdown() }

type shutdownFunc struct{ fn func() }

func (f *shutdownFunc) Shutdown() { f.fn() }

// TrackSocket is Track for a socket with a Shutdown method, without the
// allocations of a closure: for sockets there are many of, such as stream
// connections. s must be comparable; UntrackSocket(s) unregisters it.
func (m *Manager) TrackSocket(s Shutdowner) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return ErrShuttingDown
	}
	m.live[s] = struct{}{}
	return nil
}

// UntrackSocket unregisters a socket registered with TrackSocket.
func (m *Manager) UntrackSocket(s Shutdowner) {
	m.mu.Lock()
	delete(m.live, s)
	m.mu.Unlock()
}

// Go runs fn on a new goroutine that Close waits for. It fails with
// ErrShuttingDown if the manager is closing. fn must return once the
// manager closes (Done is closed and every tracked socket is closed).
func (m *Manager) Go(fn func()) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return ErrShuttingDown
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		fn()
	}()
	return nil
}

// Pause stops every shard at a safe point and returns when all are stopped:
// until Resume, no event is delivered and no job runs. A second Pause before
// Resume returns ErrPaused. Pause must not be called from a shard job.
func (m *Manager) Pause() error {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	if m.paused {
		return ErrPaused
	}
	if m.ctx.Err() != nil {
		return ErrShuttingDown
	}
	for _, s := range m.shards {
		s.pause()
	}
	m.paused = true
	return nil
}

// Resume restarts the shards stopped by Pause. Without a Pause it returns
// ErrNotPaused.
func (m *Manager) Resume() error {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	if !m.paused {
		return ErrNotPaused
	}
	m.resumeLocked()
	return nil
}

func (m *Manager) resumeLocked() {
	for _, s := range m.shards {
		s.resume()
	}
	m.paused = false
}

// Close shuts the manager down: listeners stop, every live handle gets its
// final event, pending sends fail, and every goroutine the library started
// has returned when Close returns. A paused manager is resumed first.
// Close is idempotent and always returns nil.
func (m *Manager) Close() error {
	m.closeOnce.Do(m.close)
	return nil
}

func (m *Manager) close() {
	m.cancel()
	m.pmu.Lock()
	if m.paused {
		m.resumeLocked()
	}
	m.pmu.Unlock()

	m.mu.Lock()
	m.closing = true
	live := make([]Shutdowner, 0, len(m.live))
	for s := range m.live {
		live = append(live, s)
	}
	m.mu.Unlock()
	for _, s := range live {
		s.Shutdown()
	}
	m.wg.Wait()
	for _, s := range m.shards {
		s.stop()
	}
}

// Complete reports a send's outcome on done, for transports implementing
// SendAsync: it waits for room in done, but not past the manager's
// shutdown. At shutdown a done with room still gets the outcome; only one
// still full then loses it (logged), as Handle.SendAsync documents.
func (m *Manager) Complete(done chan<- error, err error) {
	select {
	case done <- err:
		return
	default:
	}
	select {
	case done <- err:
	case <-m.Done():
		// Both may be ready: the outcome wins whenever there is room.
		select {
		case done <- err:
		default:
			m.log.Warn("nm: send completion dropped: done channel full at shutdown")
		}
	}
}

// LockThreads reports whether the manager's Config asks for shards'
// goroutines locked to OS threads (LockThreads or Pin).
func (m *Manager) LockThreads() bool { return m.cfg.LockThreads }
