package dnsmsg

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/rainbowduck/netmgr/internal/core"
	"github.com/rainbowduck/netmgr/internal/streamhook"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/stream"
)

// ErrTransfer ends a Transfer that failed: the upstream answered with an
// error rcode, sent something that is not the transfer, or closed the
// connection before its end (wrapping io.ErrUnexpectedEOF).
var ErrTransfer = errors.New("dnsmsg: zone transfer failed")

// transferQueue is the capacity of a Transfer's event channel: a few
// messages read ahead. When it is full the transfer's goroutine waits, so
// it stops reading and TCP pushes back on the upstream.
const transferQueue = 4

// Transfer sends q, a query whose reply is a stream of messages (AXFR,
// IXFR; RFC 5936, 1995), to upstream over a connection of its own (TCP for
// udp:// and tcp:// upstreams, TLS for tls://; DoH carries one message per
// reply and is refused with nm.ErrNotSupported) and returns the channel of
// the reply's messages. On it come 0..n data events, one per message as it
// arrives (Data in wire format with q's ID; each event's Data is the
// receiver's to keep; Handle is zero), then exactly one final event, then
// the channel is closed:
//
//   - nm.ErrEOF: the transfer is complete (the closing SOA came);
//   - ErrTransfer: the upstream refused (the message with its rcode came
//     first as a data event) or broke the transfer off;
//   - nm.ErrTimedOut: no message within ReadTimeout, or ctx's deadline;
//   - nm.ErrCanceled: ctx was canceled, or the manager is closing;
//   - the connection's error.
//
// The receiver drains the channel to its close, or cancels ctx: the
// transfer then ends at once. Transfer returns an error, and no channel,
// when the upstream cannot be reached.
func (c *Client) Transfer(ctx context.Context, upstream string, q *dns.Msg) (<-chan nm.Event, error) {
	wire, err := q.Pack()
	if err != nil {
		return nil, err
	}
	u, err := c.upstream(upstream)
	if err != nil {
		return nil, err
	}
	defer u.release() // the connection keeps counting on u's meter
	if u.t.kind == upHTTPS {
		return nil, fmt.Errorf("dnsmsg: transfer over DoH: %w", nm.ErrNotSupported)
	}
	h, err := u.dialTransfer(ctx)
	if err != nil {
		return nil, err
	}
	x := &transfer{h: h, ctx: ctx, id: q.Id, query: wire, ch: make(chan nm.Event, transferQueue), done: c.core().Done()}
	x.stats = countersOf(core.Handle(h), u.t.kind.transport())
	streamhook.SetFramed(core.Handle(h)) // Received counts messages, not reads
	if len(q.Question) > 0 {
		x.state.qtype = q.Question[0].Qtype
	}
	binary.BigEndian.PutUint16(wire, uint16(rand.Uint32()))
	if err := c.core().Go(x.run); err != nil {
		h.Detach()
		return nil, err
	}
	return x.ch, nil
}

// dialTransfer dials the connection of one transfer.
func (u *upstream) dialTransfer(ctx context.Context) (nm.Handle, error) {
	cfg := u.c.cfg.stream()
	cfg.Timeouts.Read = u.c.cfg.readTimeout()
	ctx = u.withStreamMeter(ctx)
	if u.t.kind == upTLS {
		return stream.DialTLS(ctx, u.c.m, u.t.addr, u.c.tlsConfig(ALPN), cfg)
	}
	return stream.Dial(ctx, u.c.m, u.t.addr, cfg)
}

// transfer is one Transfer: its goroutine sends the query, reads the
// connection and delivers each message.
type transfer struct {
	h     nm.Handle // the connection, detached when the transfer ends
	ctx   context.Context
	id    uint16 // the caller's ID
	query []byte // as sent, with its wire ID
	state xfrState
	stats *core.Counters
	// ch carries the messages then the final event. Sender: run, which
	// closes it; it waits for room (bounded by ctx): see transferQueue.
	ch   chan nm.Event
	done <-chan struct{} // the manager's: closed when it closes
}

func (x *transfer) run() {
	defer x.h.Detach()
	stop := context.AfterFunc(x.ctx, x.h.Close)
	defer stop()
	final := x.exchange()
	x.h.Close()
	if x.ctx.Err() != nil && !errors.Is(final, nm.ErrEOF) {
		final = ctxError(x.ctx)
	}
	x.finish(nm.Event{Err: final})
}

// finish delivers the final event and closes the channel. It waits for
// room as messages do; once the receiver gave up (ctx) or the manager
// closes, it makes room by dropping the oldest messages.
func (x *transfer) finish(ev nm.Event) {
	select {
	case x.ch <- ev:
		close(x.ch)
	case <-x.ctx.Done():
		core.Finalize(x.ch, ev, nil)
	case <-x.done:
		core.Finalize(x.ch, ev, nil)
	}
}

// exchange sends the query and delivers the reply's messages; it returns
// the final error.
func (x *transfer) exchange() error {
	var pfx [2]byte
	if err := prefix(&pfx, x.query); err != nil {
		return err
	}
	if err := stream.SendPrefixed(x.h, pfx[:], x.query); err != nil {
		return core.MapError(err)
	}
	a := newAssembler(MaxSize)
	defer a.Clear()
	for ev := range x.h.Read() {
		if ev.Err != nil {
			if errors.Is(ev.Err, nm.ErrEOF) {
				return fmt.Errorf("%w: %w", ErrTransfer, io.ErrUnexpectedEOF)
			}
			return ev.Err
		}
		a.Write(ev.Data)
		if done, err := x.take(a); done || err != nil {
			return err
		}
		a.Keep()
	}
	return nm.ErrCanceled
}

// take delivers the complete messages in a. It reports whether the
// transfer is over, and how: nm.ErrEOF when complete.
func (x *transfer) take(a *assembler) (bool, error) {
	for {
		msg, err := a.Next()
		if err != nil || msg == nil {
			return err != nil, err
		}
		if len(msg) < HeaderLen || !IsResponse(msg) || ID(msg) != ID(x.query) || !answers(msg, x.query) {
			x.stats.Dropped.Add(1)
			continue
		}
		m, err := Parse(msg)
		if err != nil {
			return true, fmt.Errorf("%w: %w: %w", ErrTransfer, nm.ErrBadMessage, err)
		}
		out := bytes.Clone(msg)
		binary.BigEndian.PutUint16(out, x.id)
		select {
		case x.ch <- nm.Event{Data: out}:
		case <-x.ctx.Done():
			return true, ctxError(x.ctx)
		case <-x.done:
			return true, nm.ErrCanceled
		}
		if done, err := x.state.add(m); done {
			return true, err
		}
	}
}

// xfrState follows a zone transfer to its end, as RFC 5936 2.2 and RFC
// 1995 4 define it: the first record is the zone's SOA; an AXFR ends with
// that SOA again, an IXFR with its third appearance (or at once, when
// the reply is that one SOA: no change).
type xfrState struct {
	qtype  uint16
	rrs    int    // records seen
	serial uint32 // of the first SOA
	seen   int    // appearances of the first SOA
	ixfr   bool   // a second SOA of another serial came: incremental
}

// add takes the next message and reports whether the transfer is over:
// with nm.ErrEOF when complete, ErrTransfer when it failed.
func (s *xfrState) add(m *dns.Msg) (bool, error) {
	if m.Rcode != dns.RcodeSuccess {
		return true, fmt.Errorf("%w: rcode %s", ErrTransfer, dns.RcodeToString[m.Rcode])
	}
	for _, rr := range m.Answer {
		s.rrs++
		soa, ok := rr.(*dns.SOA)
		switch {
		case s.rrs == 1 && !ok:
			return true, fmt.Errorf("%w: the first record is not an SOA", ErrTransfer)
		case s.rrs == 1:
			s.serial, s.seen = soa.Serial, 1
		case ok && soa.Serial == s.serial:
			s.seen++
		case ok && s.rrs == 2:
			s.ixfr = true
		}
	}
	done := !s.ixfr && s.seen >= 2 || s.seen >= 3 ||
		s.qtype == dns.TypeIXFR && s.rrs == 1 && len(m.Answer) == 1
	if done {
		return true, nm.ErrEOF
	}
	return false, nil
}
