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
