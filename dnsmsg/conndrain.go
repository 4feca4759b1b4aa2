package dnsmsg

// connDrain is the drain of a listener of connections C (TCP/DoT, DoQ):
// Shutdown begins it, and it is done once the last connection has ended.
// Its methods are called with the listener's lock held.
type connDrain[C comparable] struct {
	draining bool          // Shutdown began
	drained  chan struct{} // closed, once draining, when no connection is left
}

// begin starts the drain if it has not started (first), and returns the
// channel closed once it is done and the connections live now.
func (d *connDrain[C]) begin(live map[C]struct{}) (first bool, drained <-chan struct{}, conns []C) {
	if first = !d.draining; first {
		d.draining = true
		d.drained = make(chan struct{})
		d.gone(live)
	}
	conns = make([]C, 0, len(live))
	for c := range live {
		conns = append(conns, c)
	}
	return first, d.drained, conns
}

// gone is told that a connection left live: the drain is done when none
// is left.
func (d *connDrain[C]) gone(live map[C]struct{}) {
	if !d.draining || len(live) > 0 {
		return
	}
	select {
	case <-d.drained:
	default:
		close(d.drained)
	}
}
