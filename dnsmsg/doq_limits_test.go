package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// A stream that sends one byte and stalls is reset at the stream timeout,
// counted; the connection goes on.
func TestDoQStalledStreamTimesOut(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{StreamTimeout: 50 * time.Millisecond}})
	wait := echoServer(t, l, asReply)
	qc := dialRaw(t, l, nil)
	str := openWrite(t, qc, []byte{0}, false)
	_, err := readReply(t, str)
	wantStreamReset(t, err, dnsmsg.DoQRequestCancelled)
	if st := quicStats(m); st.Dropped != 1 {
		t.Errorf("Dropped = %d; want 1", st.Dropped)
	}
	if r := rawExchange(t, qc, doqQuery("after.example.")); !dnsmsg.IsResponse(r) {
		t.Errorf("reply %x; want a response", r)
	}
	l.Close()
	wait()
}

// A stream announcing 65535 bytes and sending a few is bounded by the
// stream timeout too, and delivers nothing.
func TestDoQAnnouncedLengthNotTrusted(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{StreamTimeout: 50 * time.Millisecond}})
	qc := dialRaw(t, l, nil)
	str := openWrite(t, qc, []byte{0xff, 0xff, 1, 2, 3}, false)
	_, err := readReply(t, str)
	wantStreamReset(t, err, dnsmsg.DoQRequestCancelled)
	if r := closeAndDrain(t, l); len(r.Data) != 0 {
		t.Errorf("%d requests delivered; want none", len(r.Data))
	}
}

// A client that never gives credit for its reply does not hold the
// server's Send: it returns at once, and the stream is reset at the write
// timeout, counted.
func TestDoQSendDoesNotWaitForClient(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{WriteTimeout: 50 * time.Millisecond, NoPadding: true}})
	// quic-go's smallest stream window is far below the reply's size.
	qc := dialRaw(t, l, &quic.Config{InitialStreamReceiveWindow: 1000, MaxStreamReceiveWindow: 1000})
	openWrite(t, qc, frame(doqQuery("big.example.")), true) // its reply is never read
	ev := nmtest.Next(t, l.Requests(), doqBound)
	big := make([]byte, 20000)
	copy(big, asReply(ev.Data)[0])
	start := time.Now()
	if err := ev.Handle.Send(big); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Send took %v; want it not to wait for the client", d)
	}
	ev.Handle.Detach()
	pollStat(t, "WriteTimeouts", func() int64 { return quicStats(m).WriteTimeouts }, 1)
	closeAndDrain(t, l)
}

// Replies with an OPT record are padded to a multiple of 468 bytes (RFC
// 8467); replies without one are not.
func TestDoQPadding(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	wait := echoServer(t, l, asReply)
	qc := dialRaw(t, l, nil)
	r := rawExchange(t, qc, ednsQuery("padded.example."))
	if len(r)%468 != 0 {
		t.Errorf("EDNS reply of %d bytes; want a multiple of 468", len(r))
	}
	msg, err := dnsmsg.Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	opt := msg.IsEdns0()
	if opt == nil || len(opt.Option) != 1 || opt.Option[0].Option() != dns.EDNS0PADDING {
		t.Errorf("reply OPT %v; want one padding option", opt)
	}
	plain := doqQuery("plain.example.")
	if r := rawExchange(t, qc, plain); len(r) != len(plain) {
		t.Errorf("reply without EDNS of %d bytes; want %d (not padded)", len(r), len(plain))
	}
	l.Close()
	wait()
}

// Connections from one address over MaxConnsPerAddr are ended with
// DOQ_EXCESSIVE_LOAD and counted; those within it go on.
func TestDoQConnsPerAddr(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{MaxConnsPerAddr: 1}})
	wait := echoServer(t, l, asReply)
	first := dialRaw(t, l, nil)
	rawExchange(t, first, doqQuery("first.example."))
	second := dialRaw(t, l, nil)
	wantClosedWith(t, second, dnsmsg.DoQExcessiveLoad)
	if st := quicStats(m); st.Refused != 1 {
		t.Errorf("Refused = %d; want 1", st.Refused)
	}
	if r := rawExchange(t, first, doqQuery("still.example.")); !dnsmsg.IsResponse(r) {
		t.Errorf("reply %x; want a response", r)
	}
	l.Close()
	wait()
}

// Connections over the listener's MaxConns are ended with
// DOQ_EXCESSIVE_LOAD.
func TestDoQMaxConns(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{MaxConns: 1}})
	wait := echoServer(t, l, asReply)
	first := dialRaw(t, l, nil)
	rawExchange(t, first, doqQuery("first.example."))
	wantClosedWith(t, dialRaw(t, l, nil), dnsmsg.DoQExcessiveLoad)
	l.Close()
	wait()
}

// Under load (RetryAbove reached) handshakes go through QUIC Retry, and
// still succeed.
func TestDoQRetryUnderLoad(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{RetryAbove: 1}})
	wait := echoServer(t, l, asReply)
	first := dialRaw(t, l, nil)
	rawExchange(t, first, doqQuery("first.example."))
	second := dialRaw(t, l, nil)
	if r := rawExchange(t, second, doqQuery("retried.example.")); !dnsmsg.IsResponse(r) {
		t.Errorf("reply %x; want a response", r)
	}
	l.Close()
	wait()
}

// Shutdown lets a slow answer go out, then closes the connection with
// DOQ_NO_ERROR.
func TestDoQShutdownDrains(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	qc := dialRaw(t, l, nil)
	q := doqQuery("slow.example.")
	str := openWrite(t, qc, frame(q), true)
	ev := nmtest.Next(t, l.Requests(), doqBound)
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(context.Background()) }()
	if err := ev.Handle.Send(asReply(ev.Data)[0]); err != nil {
		t.Fatal(err)
	}
	ev.Handle.Detach()
	r, err := readReply(t, str)
	if err != nil || !bytes.Equal(r, asReply(q)[0]) {
		t.Errorf("slow reply %x, %v; want it", r, err)
	}
	wantClosedWith(t, qc, dnsmsg.DoQNoError)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	nmtest.Drain(t, l.Requests(), doqBound)
}

// With Allow0RTT a resumed client's query in 0-RTT data is answered; the
// opcodes other than QUERY and NOTIFY wait for the handshake, and are
// answered too.
func TestDoQ0RTT(t *testing.T) {
	skipUnderRace(t)
	for _, allow := range []bool{false, true} {
		m := newManager(t, 1)
		l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{Allow0RTT: allow}})
		wait := echoServer(t, l, asReply)
		tc := doqClientTLS()
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		first := dialRaw0(t, l, tc)
		rawExchange(t, first, doqQuery("first.example.")) // the ticket came meanwhile
		first.CloseWithError(0, "")
		second := dialRaw0(t, l, tc)
		update := doqQuery("update.example.")
		update[2] |= 5 << 3 // opcode UPDATE
		for _, q := range [][]byte{doqQuery("early.example."), update} {
			if r := rawExchange(t, second, q); !bytes.Equal(r, asReply(q)[0]) {
				t.Errorf("reply %x; want %x", r, asReply(q)[0])
			}
		}
		if used := second.ConnectionState().Used0RTT; used != allow {
			t.Errorf("Allow0RTT %v: Used0RTT = %v", allow, used)
		}
		l.Close()
		wait()
	}
}

// dialRaw0 dials with 0-RTT when tc holds a session for the server.
func dialRaw0(t *testing.T, l *dnsmsg.Listener, tc *tls.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), doqBound)
	defer cancel()
	qc, err := quic.DialAddrEarly(ctx, l.Addr().String(), tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// A request left unanswered past the request timeout has its stream reset
// and gives its place back (counted Expired); its late Send fails.
func TestDoQRequestTimeout(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{RequestTimeout: 50 * time.Millisecond, QUIC: dnsmsg.QUICConfig{MaxStreams: 1}})
	qc := dialRaw(t, l, nil)
	reqs := holdRequests(l)
	str := openWrite(t, qc, frame(doqQuery("stuck.example.")), true)
	stuck := nmtest.Next(t, reqs, doqBound)
	_, err := readReply(t, str)
	wantStreamReset(t, err, dnsmsg.DoQInternalError)
	openWrite(t, qc, frame(doqQuery("next.example.")), true) // the place came back
	next := nmtest.Next(t, reqs, doqBound)
	if st := quicStats(m); st.Expired != 1 {
		t.Errorf("Expired = %d; want 1", st.Expired)
	}
	if err := stuck.Handle.Send(asReply(stuck.Data)[0]); !errors.Is(err, nm.ErrTimedOut) {
		t.Errorf("late Send = %v; want nm.ErrTimedOut", err)
	}
	stuck.Handle.Detach()
	next.Handle.Detach()
	closeAndDrain(t, l)
}

// When the request channel is full a query is answered REFUSED at once
// (counted Shed): a QUIC client is not pushed back.
func TestDoQShedsWhenQueueFull(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{Queue: 1})
	qc := dialRaw(t, l, nil)
	openWrite(t, qc, frame(doqQuery("queued.example.")), true) // fills the channel
	pollStat(t, "requests queued", func() int64 { return int64(len(l.Requests())) }, 1)
	r := rawExchange(t, qc, doqQuery("shed.example."))
	if msg, err := dnsmsg.Parse(r); err != nil || msg.Rcode != dns.RcodeRefused || msg.Id != 0 {
		t.Errorf("reply %v, %v; want REFUSED with ID 0", msg, err)
	}
	if st := quicStats(m); st.Shed != 1 {
		t.Errorf("Shed = %d; want 1", st.Shed)
	}
	closeAndDrain(t, l)
}
