package echo

import (
	"context"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rainbowduck/netmgr/nm"
)

// startAll starts an echo server on loopback with UDP, TCP, DoT and DoH.
func startAll(t *testing.T) *Server {
	t.Helper()
	s, err := Start(context.Background(), Options{UDP: "127.0.0.1:0", TCP: "127.0.0.1:0", DoT: "127.0.0.1:0", DoH: "127.0.0.1:0", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func addrOf(t *testing.T, s *Server, name string) netip.AddrPort {
	t.Helper()
	a, ok := s.Addr(name)
	if !ok {
		t.Fatalf("no %s listener", name)
	}
	return a
}

// run runs a tool for at most a minute and returns its output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, needTool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestDigOverTCPWithKeepalive(t *testing.T) {
	s := startAll(t)
	a := addrOf(t, s, "tcp")
	out := run(t, "dig", "@"+a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
		"+tcp", "+keepalive", "+tries=1", "+time=5", "tcp.example.", "A")
	// The reply is the query with QR set, and the keepalive option
	// answered with the server's timeout (30 s).
	contains(t, out, "status: NOERROR", "flags: qr", ";tcp.example.", "TCP KEEPALIVE: 30.0 secs")
	s.Close()
	if st := s.Manager().Stats().Of(nm.TCP); st.Accepted != 1 || st.Sent != 1 {
		t.Errorf("TCP stats %+v; want 1 accepted, 1 sent", st)
	}
}

func TestKdigOverTLS(t *testing.T) {
	s := startAll(t)
	a := addrOf(t, s, "dot")
	out := run(t, "kdig", "@"+a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
		"+tls", "+timeout=5", "+retry=0", "dot.example.", "AAAA")
	contains(t, out, "status: NOERROR", "qr", "dot.example.", "TLS")
	s.Close()
	if st := s.Manager().Stats().Of(nm.TLS); st.Accepted != 1 || st.Sent != 1 {
		t.Errorf("TLS stats %+v; want 1 accepted, 1 sent", st)
	}
}

func TestOpensslNegotiatesDot(t *testing.T) {
	s := startAll(t)
	a := addrOf(t, s, "dot")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, "openssl"), "s_client", "-connect", a.String(),
		"-alpn", "dot", "-servername", "localhost")
	cmd.Stdin = strings.NewReader("") // EOF at once: connect, handshake, leave
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	contains(t, string(out), "ALPN protocol: dot")
}

func TestDnsperfStreamsNoLoss(t *testing.T) {
	for _, mode := range []string{"tcp", "dot"} {
		t.Run(mode, func(t *testing.T) {
			s := startAll(t)
			a := addrOf(t, s, mode)
			// 200 queries in flight over 4 connections, 2000 in all.
			out := run(t, "dnsperf", "-m", mode, "-s", a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
				"-d", "../../testdata/queries.txt", "-n", "1", "-c", "4", "-q", "200", "-t", "10")
			contains(t, out, "Queries completed:    2000 (100.00%)", "Queries lost:         0 (0.00%)")
		})
	}
}
