package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// writerBatch is how many queued datagrams one sendmmsg carries at most.
const writerBatch = 64

// writerRounds bounds how many batches one goroutine writes for others
// before it hands the job on, so no caller is held hostage by a busy socket.
const writerRounds = 8

// errYourTurn tells a waiting caller that it now writes for the others.
var errYourTurn = errors.New("transport: your turn to write")

// Writer sends datagrams on one UDP socket for many goroutines. A caller
// that finds the socket idle writes its datagram at once with one system
// call; callers that arrive while a write is in progress queue up, and the
// writing goroutine sends the whole queue with sendmmsg before it returns.
// Every WriteTo returns only when its datagram was handed to the kernel or
// failed, so the caller may reuse the buffer at once.
//
// A Writer is safe for concurrent use. It allocates nothing in steady state.
type Writer struct {
	conn      *net.UDPConn
	connected bool

	mu    sync.Mutex
	busy  bool        // a goroutine is writing; guarded by mu
	queue []*writeReq // callers waiting for the writer; guarded by mu
	spare []*writeReq // the writer's drained queue, reused; owned by the busy goroutine
	batch *Batch      // owned by the busy goroutine
}

type writeReq struct {
	b       []byte
	to      netip.AddrPort
	from    netip.Addr // source address (Message.Local); zero: the kernel's choice
	ifindex int
	// done receives exactly one value: the write's result, or errYourTurn.
	// Buffered so the writer never blocks on a waiting caller.
	done chan error
}

var reqPool = sync.Pool{New: func() any { return &writeReq{done: make(chan error, 1)} }}

// NewWriter returns a Writer for c. If connected, datagrams go to the
// socket's peer and WriteTo's address is ignored.
func NewWriter(c *net.UDPConn, connected bool) (*Writer, error) {
	b, err := NewBatch(c, writerBatch, 0)
	if err != nil {
		return nil, err
	}
	return &Writer{conn: c, connected: connected, batch: b}, nil
}

// WriteTo sends b to addr (ignored on a connected socket).
func (w *Writer) WriteTo(b []byte, addr netip.AddrPort) error {
	return w.WriteFrom(b, addr, netip.Addr{}, 0)
}

// WriteFrom sends b to addr from the source address from and interface
// ifindex, as Message.Local and Message.IfIndex say (zero values: the
// kernel chooses).
func (w *Writer) WriteFrom(b []byte, addr netip.AddrPort, from netip.Addr, ifindex int) error {
	w.mu.Lock()
	if !w.busy {
		w.busy = true
		w.mu.Unlock()
		return w.serve(w.writeOne(b, addr, from, ifindex))
	}
	r := reqPool.Get().(*writeReq)
	r.b, r.to, r.from, r.ifindex = b, addr, from, ifindex
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	err := <-r.done
	if err == errYourTurn {
		err = w.serve(w.writeOne(r.b, r.to, r.from, r.ifindex))
	}
	r.b = nil
	reqPool.Put(r)
	return err
}

func (w *Writer) writeOne(b []byte, addr netip.AddrPort, from netip.Addr, ifindex int) error {
	var err error
	switch {
	case from.IsValid() && !w.connected:
		// Only a batch carries a source address.
		m := &w.batch.Msgs[0]
		m.Buf, m.Addr, m.Local, m.IfIndex = b, addr, from, ifindex
		w.batch.Write(1)
		err = m.Err
		m.Buf, m.Err = nil, nil
	case w.connected:
		_, err = w.conn.Write(b)
	default:
		_, err = w.conn.WriteToUDPAddrPort(b, addr)
	}
	return err
}

// serve writes the queue for the others while this goroutine is the writer,
// then returns its own result.
func (w *Writer) serve(own error) error {
	for round := 0; ; round++ {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.busy = false
			w.mu.Unlock()
			return own
		}
		if round == writerRounds {
			next := w.queue[0]
			w.queue = append(w.queue[:0], w.queue[1:]...)
			w.mu.Unlock()
			next.done <- errYourTurn
			return own
		}
		q := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()
		w.flush(q)
		clear(q)
		w.spare = q[:0]
	}
}

func (w *Writer) flush(q []*writeReq) {
	for len(q) > 0 {
		n := min(len(q), len(w.batch.Msgs))
		for i, r := range q[:n] {
			m := &w.batch.Msgs[i]
			m.Buf, m.Addr, m.Local, m.IfIndex = r.b, r.to, r.from, r.ifindex
			if w.connected {
				m.Addr, m.Local, m.IfIndex = netip.AddrPort{}, netip.Addr{}, 0
			}
		}
		w.batch.Write(n)
		for i, r := range q[:n] {
			m := &w.batch.Msgs[i]
			r.done <- m.Err
			m.Buf, m.Err = nil, nil
		}
		q = q[n:]
	}
}
