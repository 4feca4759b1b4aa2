package dnsmsg_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// A raw RFC 9250 client gets each query answered on its own stream, with
// ID 0, many streams at once; messages are counted.
func TestDoQExchange(t *testing.T) {
	m := newManager(t, 2)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	wait := echoServer(t, l, asReply)
	qc := dialRaw(t, l, nil)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			q := doqQuery("q" + string(rune('a'+i)) + ".example.")
			r := rawExchange(t, qc, q)
			want := bytes.Clone(q)
			dnsmsg.SetResponse(want)
			if !bytes.Equal(r, want) {
				t.Errorf("reply %x; want %x", r, want)
			}
		})
	}
	wg.Wait()
	l.Close()
	if r := wait(); len(r.Data) != n || !errors.Is(r.Final, nm.ErrCanceled) {
		t.Errorf("server saw %d requests, final %v; want %d, ErrCanceled", len(r.Data), r.Final, n)
	}
	if st := quicStats(m); st.Received != n || st.Sent != n || st.Accepted != 1 {
		t.Errorf("Received %d, Sent %d, Accepted %d; want %d, %d, 1", st.Received, st.Sent, st.Accepted, n, n)
	}
}

// Each rule of RFC 9250 whose breach is a protocol error ends the
// connection with DOQ_PROTOCOL_ERROR; nothing is delivered, and it is
// counted.
func TestDoQProtocolErrors(t *testing.T) {
	good := doqQuery("example.org.")
	withID := bytes.Clone(good)
	withID[1] = 7
	keepalive := ednsQuery("example.org.", &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
	tests := []struct {
		name string
		send func(t *testing.T, qc *quic.Conn)
	}{
		{"non-zero ID", func(t *testing.T, qc *quic.Conn) { openWrite(t, qc, frame(withID), true) }},
		{"two queries on a stream", func(t *testing.T, qc *quic.Conn) {
			openWrite(t, qc, append(frame(good), frame(good)...), true)
		}},
		{"FIN before the message", func(t *testing.T, qc *quic.Conn) { openWrite(t, qc, frame(good)[:9], true) }},
		{"FIN before the length", func(t *testing.T, qc *quic.Conn) { openWrite(t, qc, []byte{0}, true) }},
		{"zero length", func(t *testing.T, qc *quic.Conn) { openWrite(t, qc, []byte{0, 0}, true) }},
		{"edns-tcp-keepalive", func(t *testing.T, qc *quic.Conn) { openWrite(t, qc, frame(keepalive), true) }},
		{"a response", func(t *testing.T, qc *quic.Conn) {
			r := bytes.Clone(good)
			dnsmsg.SetResponse(r)
			openWrite(t, qc, frame(r), true)
		}},
		{"unidirectional stream", func(t *testing.T, qc *quic.Conn) {
			str, err := qc.OpenUniStream()
			if err != nil {
				t.Fatal(err)
			}
			str.Write(frame(good))
			str.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, 1)
			l := listenQUIC(t, m, dnsmsg.ServerConfig{})
			qc := dialRaw(t, l, nil)
			tt.send(t, qc)
			wantClosedWith(t, qc, dnsmsg.DoQProtocolError)
			pollStat(t, "Dropped", func() int64 { return quicStats(m).Dropped }, 1)
			if r := closeAndDrain(t, l); len(r.Data) != 0 {
				t.Errorf("%d requests delivered; want none", len(r.Data))
			}
		})
	}
}

// A request released unanswered resets its stream with
// DOQ_INTERNAL_ERROR; the connection goes on.
func TestDoQUnansweredResetsStream(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{})
	qc := dialRaw(t, l, nil)
	str := openWrite(t, qc, frame(doqQuery("dropped.example.")), true)
	ev := nmtest.Next(t, l.Requests(), doqBound)
	ev.Handle.Detach()
	_, err := readReply(t, str)
	wantStreamReset(t, err, dnsmsg.DoQInternalError)

	done := make(chan []byte, 1)
	go func() { done <- rawExchange(t, qc, doqQuery("answered.example.")) }()
	ev = nmtest.Next(t, l.Requests(), doqBound)
	reply := asReply(ev.Data)[0]
	if err := ev.Handle.Send(reply); err != nil {
		t.Fatal(err)
	}
	ev.Handle.Detach()
	if r := <-done; !dnsmsg.IsResponse(r) {
		t.Errorf("second query's reply %x; want a response", r)
	}
	closeAndDrain(t, l)
}

// The queries in flight on a connection are bounded by the stream credit:
// at the bound the client cannot open another stream until a request is
// released.
func TestDoQInFlightBound(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{MaxStreams: 2}})
	qc := dialRaw(t, l, nil)
	reqs := holdRequests(l)
	var held []nm.Handle
	for range 2 {
		openWrite(t, qc, frame(doqQuery("held.example.")), true)
		held = append(held, nmtest.Next(t, reqs, doqBound).Handle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	_, err := qc.OpenStreamSync(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third stream opened (%v) with 2 requests held; want it to wait", err)
	}
	held[0].Send(asReply(doqQuery("held.example."))[0])
	held[0].Detach()
	openWrite(t, qc, frame(doqQuery("third.example.")), true)
	third := nmtest.Next(t, reqs, doqBound)
	third.Handle.Detach()
	held[1].Detach()
	closeAndDrain(t, l)
}

// A client that cancels its stream (STOP_SENDING) gives the request's
// place back at once, and the request's handle learns it (Done).
func TestDoQStopSendingFreesPlace(t *testing.T) {
	m := newManager(t, 1)
	l := listenQUIC(t, m, dnsmsg.ServerConfig{QUIC: dnsmsg.QUICConfig{MaxStreams: 1}})
	qc := dialRaw(t, l, nil)
	reqs := holdRequests(l)
	str := openWrite(t, qc, frame(doqQuery("cancelled.example.")), true)
	first := nmtest.Next(t, reqs, doqBound)
	str.CancelRead(quic.StreamErrorCode(dnsmsg.DoQRequestCancelled))

	done := make(chan []byte, 1)
	go func() { done <- rawExchange(t, qc, doqQuery("next.example.")) }()
	next := nmtest.Next(t, reqs, doqBound) // the place was given back
	next.Handle.Send(asReply(next.Data)[0])
	next.Handle.Detach()
	<-done
	if err := first.Handle.Send(asReply(first.Data)[0]); err == nil {
		t.Errorf("Send on a cancelled stream succeeded; want an error")
	}
	first.Handle.Detach()
	closeAndDrain(t, l)
}
