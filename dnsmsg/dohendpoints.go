package dnsmsg

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// DefaultEndpointQueue is the capacity of an endpoint's request channel
// when NewEndpoints is given none.
const DefaultEndpointQueue = 1024

// Endpoints is a set of DoH endpoint paths, each delivering its requests
// on a channel of its own: one event per DNS message, with a handle to
// reply on (the receiver owns one reference); then, once the set is no
// longer served (replaced with HTTPListener.SetEndpoints, or the listener
// closed), one final event with nm.ErrCanceled; then the channel is
// closed. A set serves one listener once. Its methods are safe for
// concurrent use.
type Endpoints struct {
	paths map[string]*endpoint // fixed at creation
	list  []string
	bound atomic.Bool
	once  sync.Once
}

// NewEndpoints returns a set of endpoints for the given paths (DefaultPath
// if none), each with a request channel of capacity queue
// (DefaultEndpointQueue if zero). Paths must pass ValidPath.
func NewEndpoints(queue int, paths ...string) (*Endpoints, error) {
	if len(paths) == 0 {
		paths = []string{DefaultPath}
	}
	if queue <= 0 {
		queue = DefaultEndpointQueue
	}
	e := &Endpoints{paths: make(map[string]*endpoint, len(paths))}
	for _, p := range paths {
		if err := ValidPath(p); err != nil {
			return nil, err
		}
		if e.paths[p] != nil {
			continue
		}
		e.paths[p] = &endpoint{ch: make(chan nm.Event, queue)}
		e.list = append(e.list, p)
	}
	return e, nil
}

// Paths returns the paths of the set, in the order given.
func (e *Endpoints) Paths() []string { return slices.Clone(e.list) }

// Requests returns the request channel of path, or nil if the set has no
// such path.
func (e *Endpoints) Requests(path string) <-chan nm.Event {
	if ep := e.paths[path]; ep != nil {
		return ep.ch
	}
	return nil
}

// bind claims the set for a listener; false if one has it already.
func (e *Endpoints) bind() bool { return e.bound.CompareAndSwap(false, true) }

// end gives every channel its final event, once.
func (e *Endpoints) end() {
	e.once.Do(func() {
		for _, ep := range e.paths {
			ep.end()
		}
	})
}

// endpoint is one path's channel. Requests are offered under the read
// lock, without waiting; end takes the write lock, so that the final event
// comes after every delivery.
type endpoint struct {
	// ch carries the requests. Senders: the connections' readers and
	// HTTP/1.1 handlers (offer, under mu's read lock; a full channel sheds
	// the request); end sends the final event and closes it.
	ch chan nm.Event

	mu    sync.RWMutex
	ended bool // guarded by mu
}

// offer hands ev to the consumer if its channel has room, without
// waiting (but not while the manager is paused); full reports that it had
// none. Neither: the endpoint ended.
func (ep *endpoint) offer(shard *core.Shard, ev nm.Event) (ok, full bool) {
	ep.mu.RLock()
	defer ep.mu.RUnlock()
	if ep.ended {
		return false, false
	}
	shard.Enter()
	defer shard.Exit()
	select {
	case ep.ch <- ev:
		return true, false
	default:
		return false, true
	}
}

func (ep *endpoint) end() {
	ep.mu.Lock()
	ep.ended = true
	ep.mu.Unlock()
	core.Finalize(ep.ch, nm.Event{Err: nm.ErrCanceled}, detachRequest)
}
