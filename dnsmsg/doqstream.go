package dnsmsg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/nm"
)

// errDoQUni: the client opened a unidirectional stream.
var errDoQUni = errors.New("dnsmsg: DoQ client opened a unidirectional stream")

// errReplied: a DoQ stream carries one reply; a second Send fails.
var errReplied = errors.New("dnsmsg: DoQ request answered already (one reply per stream)")

// doqStream is the socket of one DoQ request handle: its stream.
type doqStream struct {
	c   *doqConn
	str *quic.Stream
	// replied is set by the first Send (or Close): the stream's write side
	// is then the reply's, and Released leaves it alone.
	replied atomic.Bool
	// freed is set when the stream's place on the connection is given
	// back: at release, or when the client cancels the stream first.
	freed atomic.Bool
	// stopWatch stops the watch on the stream's cancellation by the
	// client.
	stopWatch func() bool
	// expired is set when the request timeout reclaimed the place: a late
	// Send fails with nm.ErrTimedOut.
	expired atomic.Bool
	// expiry reclaims the stream's place if its request stays unanswered
	// past ServerConfig.RequestTimeout; nil when there is none.
	expiry *time.Timer
}

// expire reclaims the place of a request left unanswered past the request
// timeout: its stream is reset with DOQ_INTERNAL_ERROR (unless answered
// already), so that a leaked or stuck request cannot hold its connection's
// stream credit, or a drain, for good. Its handle stays valid for its
// holder; a late Send fails with nm.ErrTimedOut.
func (d *doqStream) expire() {
	if d.freed.Load() {
		return
	}
	d.expired.Store(true)
	if !d.replied.Swap(true) {
		// QUIC gives a stream's credit back once the stream is over.
		d.str.CancelWrite(quic.StreamErrorCode(DoQInternalError))
	}
	d.c.stats.Expired.Add(1)
	d.c.s.m.Logger().Debug("dnsmsg: DoQ request unanswered past the request timeout; its place is reclaimed", "peer", d.c.peer)
	d.free()
}

// watch frees the stream's place as soon as the client cancels it
// (STOP_SENDING): the consumer's work for it is useless from then on.
func (d *doqStream) watch(rh core.Handle) {
	d.stopWatch = context.AfterFunc(d.str.Context(), func() {
		var se *quic.StreamError
		if errors.As(context.Cause(d.str.Context()), &se) && se.Remote {
			// quic-go completes the stream, and grants its credit, once
			// the cancellation is acknowledged by a CancelWrite.
			d.str.CancelWrite(se.ErrorCode)
			d.free()
		}
	})
}

// free gives the stream's place back, once.
func (d *doqStream) free() {
	if d.freed.Swap(true) {
		return
	}
	d.str.ReleaseStreamCredit()
	d.c.done()
}

// Send implements socket: the reply, with its length prefix and EDNS
// padding, is queued on the stream with its FIN, and Send returns. If the
// client's flow control has no room for it yet, a goroutine writes it
// within the write timeout; Send does not wait.
func (d *doqStream) Send(rh core.Handle, b []byte) error { return d.send(rh, b, nil) }

// SendAsync implements socket.
func (d *doqStream) SendAsync(rh core.Handle, b []byte, done chan<- error) error {
	return d.send(rh, b, done)
}

func (d *doqStream) send(rh core.Handle, b []byte, done chan<- error) error {
	switch {
	case len(b) < HeaderLen:
		return nm.ErrBadMessage
	case len(b) > MaxSize:
		return nm.ErrTooLarge
	case d.replied.Swap(true):
		if d.expired.Load() {
			return nm.ErrTimedOut
		}
		return errReplied
	}
	out := d.frame(rh, b)
	err := d.str.TryWriteAll(out)
	if errors.Is(err, quic.ErrWouldBlock) {
		out = bytes.Clone(out) // rh.Buf goes back to the pool at release
		// On a goroutine the manager waits for, bounded by the write timeout.
		if err := d.c.s.m.Go(func() { d.writeSlow(out, done) }); err != nil {
			d.str.CancelWrite(quic.StreamErrorCode(DoQInternalError))
			d.c.stats.SendFailed.Add(1)
			return err
		}
		return nil
	}
	if err != nil {
		d.c.stats.SendFailed.Add(1)
		return mapDoQError(err)
	}
	d.str.Close()
	d.c.stats.Sent.Add(1)
	if done != nil {
		d.c.s.m.Complete(done, nil)
	}
	return nil
}

// frame returns the reply b with its length prefix, message ID 0 and
// padding, built in the handle's buffer, after the room kept for the
// prefix: a reply built in place over the request is copied onto itself.
func (d *doqStream) frame(rh core.Handle, b []byte) []byte {
	out := (*rh.Buf())[:2]
	if d.c.s.cfg.NoPadding {
		out = append(out, b...)
	} else {
		out = padDoQ(out, b)
	}
	binary.BigEndian.PutUint16(out, uint16(len(out)-2))
	out[2], out[3] = 0, 0 // RFC 9250 4.2.1
	(*rh.Buf()) = out
	return out
}

// writeSlow writes a reply that waits for the client's flow control
// credit, within the write timeout.
func (d *doqStream) writeSlow(out []byte, done chan<- error) {
	if t := d.c.s.cfg.writeTimeout(); t > 0 {
		d.str.SetWriteDeadline(time.Now().Add(t))
	}
	_, err := d.str.Write(out)
	if err == nil {
		d.str.Close()
		d.c.stats.Sent.Add(1)
	} else {
		if core.MapError(err) == nm.ErrTimedOut {
			d.c.stats.WriteTimeouts.Add(1)
			d.c.s.m.Logger().Debug("dnsmsg: DoQ client did not take its reply in time", "peer", d.c.peer)
		} else {
			d.c.stats.SendFailed.Add(1)
		}
		d.str.CancelWrite(quic.StreamErrorCode(DoQInternalError))
		err = mapDoQError(err)
	}
	if done != nil {
		d.c.s.m.Complete(done, err)
	}
}

// mapDoQError maps quic-go's errors to the library's sentinels.
func mapDoQError(err error) error {
	if errors.Is(err, quic.Err0RTTRejected) {
		return err // the client sends its query again
	}
	var se *quic.StreamError
	if errors.As(err, &se) {
		return errors.Join(nm.ErrConnReset, err)
	}
	return core.MapError(err)
}

// Read implements socket: a request handle is not read.
func (d *doqStream) Read(rh core.Handle) <-chan nm.Event { return notReadable() }

// ReadStop implements socket.
func (d *doqStream) ReadStop(rh core.Handle) {}

// Close implements socket: the request's stream is reset with
// DOQ_INTERNAL_ERROR (unless answered already); the connection goes on.
func (d *doqStream) Close(rh core.Handle) {
	if !d.replied.Swap(true) {
		d.str.CancelWrite(quic.StreamErrorCode(DoQInternalError))
	}
}

// Released implements socket: a request released unanswered resets its
// stream with DOQ_INTERNAL_ERROR (RFC 9250 4.3: the server cannot answer),
// not the connection; its place goes back.
func (d *doqStream) Released(rh core.Handle) {
	if !d.replied.Swap(true) {
		d.str.CancelWrite(quic.StreamErrorCode(DoQInternalError))
		d.c.stats.Dropped.Add(1)
	}
	d.stopWatch()
	if d.expiry != nil {
		d.expiry.Stop()
	}
	d.free()
	d.c.s.handles.Put(rh)
}

// Done returns a channel closed when the client cancels the request's
// stream (STOP_SENDING) or its reply is sent: Request.Context ends then.
func (d *doqStream) Done(rh core.Handle) <-chan struct{} { return d.str.Context().Done() }
