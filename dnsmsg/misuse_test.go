package dnsmsg_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/core"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// rawServer is a listener of one transport served through its channel,
// with two clients of it.
type rawServer struct {
	reqs   <-chan nm.Event
	a, b   *dnsmsg.Conn
	closer func()
}

func newRawServer(t *testing.T, m *nm.Manager, kind string) *rawServer {
	t.Helper()
	s := &rawServer{}
	switch kind {
	case "doh":
		l := hkinds[1].listen(t, m, dnsmsg.HTTPConfig{})
		s.reqs, s.closer = requests(l), func() { l.Close() }
		s.a, s.b = hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{}), hkinds[1].dial(t, m, l, dnsmsg.ClientConfig{})
	default:
		l := listenKind(t, m, kind)
		s.reqs, s.closer = l.Requests(), func() { l.Close() }
		s.a, s.b = dialKind(t, m, kind, l.Addr().String()), dialKind(t, m, kind, l.Addr().String())
	}
	t.Cleanup(s.closer)
	return s
}

func mustPanicWith(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, want) {
			t.Errorf("panic %v; want one saying %q", r, want)
		}
	}()
	fn()
}

// A request handle kept after its release fails loudly every time, even
// once its pooled state serves another client: a late Send cannot answer
// anybody, a second Detach panics instead of releasing the other client's
// request, and the new request is answered as it should be.
func TestHandleMisuseAfterReuse(t *testing.T) {
	forHandlerKinds(t, func(t *testing.T, kind string) {
		m := nmtest.Manager(t, 1)
		s := newRawServer(t, m, kind)

		// Client A's request is answered and released.
		qa := pack(t, query("a.example"))
		if err := s.a.Send(qa); err != nil {
			t.Fatal(err)
		}
		evA := nmtest.Next(t, s.reqs, nmtest.Timeout)
		stale := evA.Handle
		if err := stale.Send(asReply(evA.Data)[0]); err != nil {
			t.Fatal(err)
		}
		stale.Detach()
		if ev := nmtest.NextErr(t, s.a.Read(), nil); dnsmsg.ID(ev.Data) != dnsmsg.ID(qa) {
			t.Fatalf("client A got ID %d; want %d", dnsmsg.ID(ev.Data), dnsmsg.ID(qa))
		}

		// Client B's request arrives, on the state A's request left.
		qb := pack(t, query("b.example"))
		if err := s.b.Send(qb); err != nil {
			t.Fatal(err)
		}
		evB := nmtest.Next(t, s.reqs, nmtest.Timeout)

		// A's handle, used late: nothing reaches B, every time.
		for range 2 {
			if err := stale.Send(asReply(qa)[0]); !errors.Is(err, nm.ErrReleased) {
				t.Errorf("late Send: %v; want nm.ErrReleased", err)
			}
		}
		if err := stale.SendAsync(asReply(qa)[0], make(chan error, 1)); !errors.Is(err, nm.ErrReleased) {
			t.Errorf("late SendAsync: %v; want nm.ErrReleased", err)
		}
		if a := stale.PeerAddr(); a.IsValid() {
			t.Errorf("late PeerAddr = %v; want the zero value", a)
		}
		stale.Close() // does nothing: B's conversation goes on
		mustPanicWith(t, "Detach on a released handle", stale.Detach)
		mustPanicWith(t, "Attach on a released handle", func() { stale.Attach() })
		if stale == evB.Handle || core.Handle(evB.Handle).Refs() != 1 {
			t.Errorf("B's handle %v with %d refs; want a new handle with 1", evB.Handle, core.Handle(evB.Handle).Refs())
		}

		// B gets its own answer, and only it.
		if err := evB.Handle.Send(asReply(evB.Data)[0]); err != nil {
			t.Fatal(err)
		}
		evB.Handle.Detach()
		if ev := nmtest.NextErr(t, s.b.Read(), nil); dnsmsg.ID(ev.Data) != dnsmsg.ID(qb) || dnsmsg.ID(qb) == dnsmsg.ID(qa) && kind != "doh" {
			t.Errorf("client B got ID %d; want %d (A's was %d)", dnsmsg.ID(ev.Data), dnsmsg.ID(qb), dnsmsg.ID(qa))
		}
		s.b.SetReadTimeout(quiet)
		if ev := <-s.b.Read(); !errors.Is(ev.Err, nm.ErrTimedOut) {
			t.Errorf("client B got a second reply %x (%v); want none", ev.Data, ev.Err)
		}
		s.b.SetReadTimeout(time.Second)
	})
}

// A reply after the listener closed fails at once with the same sentinel
// on every transport: nm.ErrClosed.
func TestSendAfterCloseSameError(t *testing.T) {
	for _, kind := range handlerKinds {
		t.Run(kind, func(t *testing.T) {
			m := nmtest.Manager(t, 1)
			s := newRawServer(t, m, kind)
			s.a.Send(pack(t, query("late.example")))
			ev := nmtest.Next(t, s.reqs, nmtest.Timeout)
			defer ev.Handle.Detach()
			s.closer()
			nmtest.ExpectFinal(t, s.reqs, 0, nm.ErrCanceled)
			deadline := time.Now().Add(nmtest.Timeout)
			var err error
			for err == nil && time.Now().Before(deadline) {
				// A stream connection closes on its reader's goroutine.
				err = ev.Handle.Send(asReply(ev.Data)[0])
			}
			if !errors.Is(err, nm.ErrClosed) {
				t.Errorf("Send after Close: %v; want nm.ErrClosed", err)
			}
		})
	}
}
