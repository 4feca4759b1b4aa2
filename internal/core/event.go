package core

// Finalize delivers the final event ev on ch and closes ch, without ever
// blocking: if ch is full, the oldest queued events are dropped to make
// room, each passed to dropped when it is not nil (a listener's channel
// detaches the requests it drops). The caller must be the only sender
// left on ch, after every other send on ch has finished.
func Finalize[E any](ch chan E, ev E, dropped func(E)) {
	for {
		select {
		case ch <- ev:
			close(ch)
			return
		default:
		}
		select {
		case old := <-ch:
			if dropped != nil {
				dropped(old)
			}
		default:
		}
	}
}

// Deliver sends ev on ch, waiting for room, but never while the manager is
// paused: an event is never delivered between Pause and Resume. It returns
// false, without sending, as soon as wake is ready, so that the caller can
// look at its state again (a close or a ReadStop). It must not be called
// between s.Enter and s.Exit.
func Deliver[E any](s *Shard, ch chan<- E, ev E, wake <-chan struct{}) bool {
	return DeliverEither(s, ch, ev, wake, nil)
}

// DeliverEither is Deliver with two wake channels (either may be nil): it
// returns false as soon as one of them is ready. For conversations that
// end on either of two signals, such as a DoH stream's reset and its
// listener's close.
func DeliverEither[E any](s *Shard, ch chan<- E, ev E, wake, wake2 <-chan struct{}) bool {
	for {
		s.gate.RLock()
		select {
		case ch <- ev:
			s.gate.RUnlock()
			return true
		case <-wake:
			s.gate.RUnlock()
			return false
		case <-wake2:
			s.gate.RUnlock()
			return false
		case <-s.pausing:
			// Let go of the gate; the next RLock waits for Resume.
			s.gate.RUnlock()
		}
	}
}
