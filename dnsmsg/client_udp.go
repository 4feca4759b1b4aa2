package dnsmsg

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/nm"
)

// udpTries bounds the datagrams a UDP query reads that are not its reply
// (wrong ID or question, not a response) before it gives up.
const udpTries = 32

// udpBufs holds the receive buffers of UDP queries, each as large as the
// largest reply accepted.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, MaxSize); return &b }}

// exchangeUDP sends q from a socket of its own (a fresh source port),
// under a random ID, and reads the reply: a datagram from the upstream
// with that ID and q's question. Others are dropped and counted. Replies
// longer than ClientConfig.MaxUDPSize are dropped too.
func (u *upstream) exchangeUDP(ctx context.Context, q []byte) ([]byte, error) {
	stats := u.meter.On(u.c.core().NextShard())
	// The socket counts as open from the start, so that the upstream's
	// meter is not folded away (Client.Close) while this query counts.
	stats.Active.Add(1)
	defer stats.Active.Add(-1)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", u.t.addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx)
		}
		return nil, core.MapError(err)
	}
	stats.Opened.Add(1)
	defer stats.Closed.Add(1)
	defer nc.Close()
	unblock := func() { nc.SetDeadline(time.Now()) }
	stop := context.AfterFunc(ctx, unblock)
	defer stop()
	stopM := context.AfterFunc(u.c.core().Context(), unblock)
	defer stopM()
	wire := bytes.Clone(q)
	binary.BigEndian.PutUint16(wire, uint16(rand.Uint32()))
	if hdr := u.c.cfg.ProxyHeader; len(hdr) > 0 {
		wire = append(bytes.Clone(hdr), wire...)
	}
	if _, err := nc.Write(wire); err != nil {
		return nil, u.udpError(ctx, err)
	}
	stats.Sent.Add(1)
	return u.readUDP(ctx, nc, wire[len(wire)-len(q):], ID(q), stats)
}

// readUDP reads datagrams on nc until the reply to sent comes, which it
// returns with the caller's id.
func (u *upstream) readUDP(ctx context.Context, nc net.Conn, sent []byte, id uint16, stats *core.Counters) ([]byte, error) {
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	limit := u.c.cfg.MaxUDPSize
	if limit <= 0 || limit > MaxSize {
		limit = MaxSize
	}
	for range udpTries {
		n, err := nc.Read(*bp)
		if err != nil {
			return nil, u.udpError(ctx, err)
		}
		r := (*bp)[:n]
		if n > limit || n < HeaderLen || !IsResponse(r) || ID(r) != ID(sent) || !answers(r, sent) {
			stats.Dropped.Add(1)
			continue
		}
		stats.Received.Add(1)
		r = bytes.Clone(r)
		binary.BigEndian.PutUint16(r, id)
		return r, nil
	}
	return nil, nm.ErrBadMessage
}

// udpError maps an I/O error of a UDP query; one that ctx or the
// manager's close caused says so.
func (u *upstream) udpError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctxError(ctx)
	case u.c.core().Closing():
		return nm.ErrShuttingDown
	}
	return core.MapError(err)
}
