package stream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/internal/certs"
	"github.com/rainbowduck/netmgr/internal/streamhook"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"github.com/rainbowduck/netmgr/stream"
)

func TestTLSALPNAndResumption(t *testing.T) {
	m := newManager(t, 1)
	l, err := stream.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	wait := echoServer(l)
	client := clientTLS.Clone()
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		h, err := stream.DialTLS(context.Background(), m, l.Addr().String(), client, stream.Config{})
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 tickets arrive after the handshake: a round trip reads it.
		h.Send([]byte("ping"))
		readN(t, h, 4)
		st, ok := stream.TLSState(h)
		if !ok || st.NegotiatedProtocol != "echo" || st.DidResume != wantResumed {
			t.Errorf("dial %d: ALPN %q, resumed %v; want %q, %v", i, st.NegotiatedProtocol, st.DidResume, "echo", wantResumed)
		}
		h.Detach()
	}
	if _, ok := stream.TLSState(tcpHandle(t, m)); ok {
		t.Error("TLSState of a TCP handle says TLS")
	}
	m.Close()
	wait()
}

// tcpHandle returns a TCP client handle, for TLSState.
func tcpHandle(t *testing.T, m *nm.Manager) nm.Handle {
	l := kinds[0].mustListen(t, m, stream.Config{})
	h := kinds[0].mustDial(t, m, l, stream.Config{})
	t.Cleanup(h.Detach)
	return h
}

func TestTLSConfigSwap(t *testing.T) {
	m := newManager(t, 1)
	l, err := stream.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	wait := echoServer(l)
	other, err := certs.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(other.Leaf)
	l.SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{other}})
	// The new certificate is served: a client trusting only it connects,
	// one trusting only the old one does not.
	h, err := stream.DialTLS(context.Background(), m, l.Addr().String(), &tls.Config{RootCAs: roots}, stream.Config{})
	if err != nil {
		t.Fatalf("dial trusting the new certificate: %v", err)
	}
	h.Detach()
	if h, err := stream.DialTLS(context.Background(), m, l.Addr().String(), clientTLS, stream.Config{}); err == nil {
		h.Detach()
		t.Error("dial trusting only the old certificate succeeded")
	}
	m.Close()
	wait()
}

func TestTLSJunkAndSilentClientsAreDropped(t *testing.T) {
	m := newManager(t, 1)
	l, err := stream.ListenTLS(context.Background(), m, "127.0.0.1:0", serverTLS, stream.Config{Timeouts: nm.Timeouts{Initial: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	junk, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	junk.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Both are closed by the server, the silent one at the initial timeout.
	for _, c := range []net.Conn{junk, silent} {
		c.SetReadDeadline(time.Now().Add(nmtest.Timeout))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("server kept a bad TLS client past its initial timeout")
				}
				break
			}
		}
	}
	l.Close()
	// Neither was delivered.
	nmtest.ExpectFinal(t, l.Conns(), 0, nm.ErrCanceled)
	if st := m.Stats().Of(nm.TLS); st.RecvFailed != 2 || st.Accepted != 2 {
		t.Errorf("stats %+v; want 2 accepted, 2 failed handshakes", st)
	}
}

// TestDialConnResumesAndServe: a Server gets whole connections after the
// handshake, and DialConn resumes TLS sessions as DialTLS does.
func TestDialConnResumesAndServe(t *testing.T) {
	m := newManager(t, 1)
	served := make(chan struct{}, 4)
	srv := serverFunc(func(c *streamhook.ServedConn) {
		nc := c.Conn
		served <- struct{}{}
		buf := make([]byte, 4)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			nc.Write(buf[:n])
		}
	})
	l, err := stream.ListenTLS(streamhook.With(context.Background(), streamhook.Hooks{Serve: srv}), m, "127.0.0.1:0", serverTLS, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	client := clientTLS.Clone()
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		nc, err := stream.DialConn(context.Background(), m, l.Addr().String(), client, stream.Config{})
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q, %v", buf, err)
		}
		if st := nc.(*tls.Conn).ConnectionState(); st.DidResume != wantResumed {
			t.Errorf("dial %d: resumed %v; want %v", i, st.DidResume, wantResumed)
		}
		nc.Close()
		<-served
	}
	// A connection still open when the listener closes is closed under its
	// Server, which returns.
	nc, err := stream.DialConn(context.Background(), m, l.Addr().String(), client, stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	<-served
	l.Close()
	nmtest.ExpectFinal(t, l.Conns(), 0, nm.ErrCanceled)
	if st := m.Stats().Of(nm.TLS); st.Accepted != 3 || st.Active != 0 {
		t.Errorf("stats %+v; want 3 accepted, none active", st)
	}
}

type serverFunc func(*streamhook.ServedConn)

func (f serverFunc) ServeConn(c *streamhook.ServedConn) { f(c) }
