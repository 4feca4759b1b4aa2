package core

import (
	"runtime"
	"sync"

	"github.com/rainbowduck/netmgr/internal/transport"
)

// Shard is one worker of a Manager. Every socket and handle belongs to one
// shard for its whole life. A shard has a job loop (see Post), the reader
// goroutines of its listening sockets, and its own counters.
type Shard struct {
	m  *Manager
	id int

	// gate is read-locked while the shard delivers events or runs a job;
	// Pause write-locks it to stop the shard at a safe point.
	gate sync.RWMutex
	// pausing is closed by Pause before it locks gate, so that goroutines
	// waiting in Deliver let go of the gate; Resume replaces it. Read under
	// gate's read lock, replaced under its write lock.
	pausing chan struct{}

	jobsMu sync.Mutex
	jobs   []func() // queued jobs; guarded by jobsMu
	// wake has a buffer of 1: Post does a non-blocking send so that a burst
	// of jobs costs one wake-up of the loop.
	wake chan struct{}
	// quit is closed by Manager.Close after every socket has gone; the loop
	// then runs what is queued and returns, closing done.
	quit chan struct{}
	done chan struct{}

	counters [numTransports]Counters
	// lat holds the latencies of closed meters, by role and transport.
	lat [2][numTransports]Latency
}

func newShard(m *Manager, id int) *Shard {
	return &Shard{
		m:       m,
		id:      id,
		pausing: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// ID returns the shard's index in its manager.
func (s *Shard) ID() int { return s.id }

// Manager returns the shard's manager.
func (s *Shard) Manager() *Manager { return s.m }

// Counters returns the shard's live counters of transport t.
func (s *Shard) Counters(t Transport) *Counters { return &s.counters[t] }

// Stats returns a snapshot of the shard's counters.
func (s *Shard) Stats() Stats { return s.m.shardStats(s) }

func (s *Shard) start() { go s.loop() }

func (s *Shard) stop() {
	close(s.quit)
	<-s.done
}

// Post queues fn to run on the shard's job loop, after the jobs posted
// before it. Jobs do not run while the manager is paused. It returns
// ErrShuttingDown, and fn never runs, once the manager has finished
// closing.
func (s *Shard) Post(fn func()) error {
	s.jobsMu.Lock()
	select {
	case <-s.done:
		s.jobsMu.Unlock()
		return ErrShuttingDown
	default:
	}
	s.jobs = append(s.jobs, fn)
	s.jobsMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *Shard) loop() {
	s.Bind()
	defer runtime.UnlockOSThread()
	var batch []func()
	for {
		select {
		case <-s.wake:
			batch = s.runJobs(batch)
		case <-s.quit:
			s.jobsMu.Lock()
			defer s.jobsMu.Unlock()
			for len(s.jobs) > 0 {
				jobs := s.jobs
				s.jobs = nil
				s.jobsMu.Unlock()
				for _, fn := range jobs {
					fn()
				}
				s.jobsMu.Lock()
			}
			close(s.done)
			return
		}
	}
}

func (s *Shard) runJobs(batch []func()) []func() {
	s.jobsMu.Lock()
	batch, s.jobs = s.jobs, batch[:0]
	s.jobsMu.Unlock()
	s.gate.RLock()
	for _, fn := range batch {
		s.runJob(fn)
	}
	s.gate.RUnlock()
	clear(batch)
	return batch
}

func (s *Shard) runJob(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			s.m.log.Error("nm: job panicked", "shard", s.id, "panic", r)
		}
	}()
	fn()
}

// Bind locks the calling goroutine to its OS thread and pins the thread to
// the shard's CPU, as the manager's Config asks; it does nothing when the
// Config asks for neither. Long-lived goroutines of the shard call it first
// and runtime.UnlockOSThread when they end.
func (s *Shard) Bind() {
	cfg := &s.m.cfg
	if !cfg.LockThreads {
		return
	}
	runtime.LockOSThread()
	if cfg.Pin && len(cfg.CPUs) > 0 {
		cpu := cfg.CPUs[s.id%len(cfg.CPUs)]
		if err := transport.PinThread(cpu); err != nil {
			s.m.log.Warn("nm: cannot pin shard", "shard", s.id, "cpu", cpu, "err", err)
		}
	}
}

// Enter marks the start of work that delivers events (a batch of
// datagrams, say): it waits while the manager is paused. Every Enter must be
// followed by Exit, and the work between must not block on a consumer.
func (s *Shard) Enter() { s.gate.RLock() }

// Exit ends the work started by Enter.
func (s *Shard) Exit() { s.gate.RUnlock() }

func (s *Shard) pause() {
	close(s.pausing)
	s.gate.Lock()
}

func (s *Shard) resume() {
	s.pausing = make(chan struct{})
	s.gate.Unlock()
}
