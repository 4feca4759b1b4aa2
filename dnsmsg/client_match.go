package dnsmsg

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// answers reports whether the reply r, whose ID was already matched, is
// for the query q: the same first question, compared without regard to
// ASCII case (RFC 4343). A reply without a question is accepted only as
// an error (FORMERR and the like).
func answers(r, q []byte) bool {
	rq, qq := firstQuestion(r), firstQuestion(q)
	if rq == nil {
		return qq == nil || r[3]&0x0f != 0 && readQDCount(r) == 0
	}
	return qq != nil && equalFold(rq, qq)
}

func readQDCount(b []byte) int { return int(b[4])<<8 | int(b[5]) }

// equalFold compares a and b, folding ASCII letters only.
func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ctxError is the error of a wait that ctx ended: nm.ErrTimedOut (which
// matches context.DeadlineExceeded) for a deadline, else nm.ErrCanceled
// wrapping ctx's error, so that errors.Is(err, context.Canceled) holds.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return nm.ErrTimedOut
	}
	return fmt.Errorf("%w: %w", nm.ErrCanceled, err)
}

// connError maps an error that ended a connection to the library's
// sentinels: the error mapping's, io.ErrUnexpectedEOF as nm.ErrEOF, and
// anything else as nm.ErrConnReset, the original kept wrapped.
func connError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", nm.ErrEOF, err)
	}
	err = core.MapError(err)
	for _, s := range []error{nm.ErrEOF, nm.ErrConnReset, nm.ErrCanceled, nm.ErrTimedOut,
		nm.ErrConnRefused, nm.ErrTooLarge, nm.ErrBadMessage, nm.ErrShuttingDown, nm.ErrOutputFull} {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", nm.ErrConnReset, err)
}
