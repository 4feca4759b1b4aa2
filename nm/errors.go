package nm

import "github.com/rainbowduck/netmgr/internal/core"

// Sentinel errors. Every error the library delivers matches one of these
// with errors.Is, or is a wrapped error from package net.
var (
	// ErrCanceled ("nm: canceled") ends a conversation that was reading
	// when it was shut down: its handle or listener was closed, or the
	// manager is closing.
	ErrCanceled = core.ErrCanceled
	// ErrShuttingDown ("nm: shutting down") ends a conversation that was
	// not reading (dormant) when it was shut down, and refuses new work on
	// a closing manager.
	ErrShuttingDown = core.ErrShuttingDown
	// ErrEOF ("nm: end of stream", wrapping io.EOF) ends a conversation
	// the peer closed.
	ErrEOF = core.ErrEOF
	// ErrTimedOut ("nm: timed out") reports a timeout. It is final on
	// servers; on clients it ends only the read it belongs to. It
	// implements Timeout() bool and matches os.ErrDeadlineExceeded and
	// context.DeadlineExceeded.
	ErrTimedOut = core.ErrTimedOut
	// ErrConnReset ("nm: connection reset") ends a conversation the peer
	// reset.
	ErrConnReset = core.ErrConnReset
	// ErrConnRefused ("nm: connection refused") reports that the peer
	// refused the connection (for UDP: an ICMP port unreachable came back).
	ErrConnRefused = core.ErrConnRefused
	// ErrQuota ("nm: quota reached") reports that a connection quota is
	// exhausted.
	ErrQuota = core.ErrQuota
	// ErrTooLarge ("nm: message too large") reports a message larger than
	// the configured maximum.
	ErrTooLarge = core.ErrTooLarge
	// ErrBadMessage ("nm: malformed message") reports a malformed message
	// from the network.
	ErrBadMessage = core.ErrBadMessage
	// ErrClosed ("nm: closed") is returned by operations on a handle,
	// listener or manager that is already closed. It matches net.ErrClosed
	// too.
	ErrClosed = core.ErrClosed
	// ErrPaused is returned by Pause when the manager is already paused.
	ErrPaused = core.ErrPaused
	// ErrNotPaused is returned by Resume when the manager is not paused.
	ErrNotPaused = core.ErrNotPaused
	// ErrNotSupported reports an operation this kind of handle cannot do.
	ErrNotSupported = core.ErrNotSupported
	// ErrOutputFull ("nm: output full (peer not reading)") ends a
	// conversation whose bounded output filled: the peer does not take its
	// replies. The send that found it full fails with it, and so do the
	// sends queued behind.
	ErrOutputFull = core.ErrOutputFull
	// ErrReleased ("nm: handle used after release") is returned by any use
	// of a handle after its last reference was released, even if the
	// conversation behind it was reused for another peer.
	ErrReleased = core.ErrReleased
)
