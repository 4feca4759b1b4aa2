package nm

// Event is what every event channel of the library carries: data read on a
// conversation, or the error that interrupted it.
//
// A channel of events delivers 0..n events with Err == nil, then exactly one
// event with Err != nil (the final event), then it is closed. On client
// handles an event with ErrTimedOut ends only the read it answers and is not
// final; the caller may read again.
type Event struct {
	// Handle is the conversation the event belongs to. For a request
	// delivered by a listener, the receiver owns one reference and must
	// Detach it when done (after replying).
	Handle Handle
	// Data holds the bytes read: one datagram, one DNS message, or a chunk of
	// a stream. It belongs to the handle, under one rule for every
	// transport: it is valid until the receiver takes the next event of the
	// same handle, or releases the handle, whichever comes first. For a
	// listener's request (a handle of its own) that is until the request is
	// released; for a client, until the event of its next Read; for a raw
	// stream, until its next event. Copy what must live longer. The
	// library cannot tell a read of Data after that from a correct one; the
	// handler layer of package dnsmsg (Request.Wire) can, and panics.
	Data []byte
	// Err is nil for data events and the reason for the final event.
	Err error
}

// Finalize delivers the final event ev on ch and closes ch, without ever
// blocking: if ch is full, the oldest queued events are dropped to make room
// (and their handles detached when detach is set, for events that carried a
// reference), and dropped, if not nil, is called for each. The caller must
// be the only sender left on ch. For transports.
func Finalize(ch chan Event, ev Event, detach bool, dropped func()) {
	finalize(ch, ev, detach, dropped)
}

// finalize delivers the final event ev on ch and closes ch. It never blocks:
// if ch is full, the oldest queued events are dropped to make room (their
// handles detached when detach is set: the events carried a reference). It must be called by the only remaining sender,
// after every other send on ch has finished.
func finalize(ch chan Event, ev Event, detach bool, dropped func()) {
	for {
		select {
		case ch <- ev:
			close(ch)
			return
		default:
		}
		select {
		case old := <-ch:
			if detach && !old.Handle.IsZero() && old.Err == nil {
				old.Handle.Detach()
			}
			if dropped != nil {
				dropped()
			}
		default:
		}
	}
}
