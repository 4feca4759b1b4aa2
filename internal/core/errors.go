package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// Sentinel errors. Every error the library delivers matches one of these
// with errors.Is, or is a wrapped error from package net.
var (
	// ErrCanceled ends a conversation that was reading when it was shut
	// down: its handle or listener was closed, or the manager is closing.
	ErrCanceled = errors.New("nm: canceled")
	// ErrShuttingDown ends a conversation that was not reading (dormant)
	// when it was shut down, and refuses new work on a closing manager.
	ErrShuttingDown = errors.New("nm: shutting down")
	// ErrEOF ends a conversation the peer closed.
	ErrEOF = fmt.Errorf("nm: end of stream: %w", io.EOF)
	// ErrTimedOut reports a timeout. It is final on servers; on clients it
	// ends only the read it belongs to. It implements Timeout() bool.
	ErrTimedOut error = timeoutError{}
	// ErrConnReset ends a conversation the peer reset.
	ErrConnReset = errors.New("nm: connection reset")
	// ErrConnRefused reports that the peer refused the connection (for UDP:
	// an ICMP port unreachable came back).
	ErrConnRefused = errors.New("nm: connection refused")
	// ErrQuota reports that a connection quota is exhausted.
	ErrQuota = errors.New("nm: quota reached")
	// ErrTooLarge reports a message larger than the configured maximum.
	ErrTooLarge = errors.New("nm: message too large")
	// ErrBadMessage reports a malformed message from the network.
	ErrBadMessage = errors.New("nm: malformed message")
	// ErrClosed is returned by operations on a handle, listener or manager
	// that is already closed. It matches net.ErrClosed too.
	ErrClosed = fmt.Errorf("nm: closed: %w", net.ErrClosed)
	// ErrPaused is returned by Pause when the manager is already paused.
	ErrPaused = errors.New("nm: manager already paused")
	// ErrNotPaused is returned by Resume when the manager is not paused.
	ErrNotPaused = errors.New("nm: manager not paused")
	// ErrNotSupported reports an operation this kind of handle cannot do.
	ErrNotSupported = errors.New("nm: operation not supported by this handle")
	// ErrOutputFull ends a conversation whose bounded output filled: the
	// peer does not take its replies. The send that found it full fails
	// with it, and so do the sends queued behind.
	ErrOutputFull = errors.New("nm: output full (peer not reading)")
	// ErrReleased is returned by any use of a handle after its last
	// reference was released, even if the conversation behind it was
	// reused for another peer.
	ErrReleased = errors.New("nm: handle used after release")
)

type timeoutError struct{}

func (timeoutError) Error() string { return "nm: timed out" }
func (timeoutError) Timeout() bool { return true }
func (timeoutError) Is(e error) bool {
	return e == os.ErrDeadlineExceeded || e == context.DeadlineExceeded
}

// MapError translates an error from a socket into the library's sentinels,
// keeping the original error wrapped. It returns nil for nil.
func MapError(err error) error {
	var sentinel error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrTimedOut
	case errors.Is(err, net.ErrClosed):
		return ErrCanceled
	case errors.Is(err, io.EOF):
		return ErrEOF
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		sentinel = ErrConnReset
	case errors.Is(err, syscall.ECONNREFUSED):
		sentinel = ErrConnRefused
	case errors.Is(err, syscall.EMSGSIZE):
		sentinel = ErrTooLarge
	default:
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
