package echo

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// needTool returns the path of a command-line tool, skipping the test when
// it is missing outside CI; in CI (CI set) a missing tool fails the test.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		nmtest.SkipOutsideCI(t, "%s not installed (.ci/run installs it: Debian bind9-dnsutils, knot-dnsutils, dnsperf, curl, dnsdist, haproxy; go install for h2spec)", name)
	}
	return p
}

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(context.Background(), Options{UDP: "127.0.0.1:0", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestEchoAnswersWithQR(t *testing.T) {
	s := start(t)
	addr, ok := s.Addr("udp")
	if !ok {
		t.Fatal("no udp listener")
	}
	q := new(dns.Msg)
	q.SetQuestion("echo.test.", dns.TypeAAAA)
	q.SetEdns0(1232, true)
	r, _, err := new(dns.Client).Exchange(q, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	q.Response = true
	if r.String() != q.String() {
		t.Errorf("reply:\n%v\nwant the query with QR set:\n%v", r, q)
	}
}

func TestDigAgainstEcho(t *testing.T) {
	dig := needTool(t, "dig")
	s := start(t)
	addr, _ := s.Addr("udp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, dig, "@"+addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())),
		"+notcp", "+tries=1", "+time=5", "dig.example.", "TXT").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	for _, want := range []string{"status: NOERROR", "flags: qr", ";dig.example.\t\t\tIN\tTXT"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dig output lacks %q:\n%s", want, out)
		}
	}
	s.Close()
	if st := s.Manager().Stats().Of(nm.UDP); st.Received != 1 || st.Sent != 1 {
		t.Errorf("stats %+v; want 1 received, 1 sent", st)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(context.Background(), Options{CertFile: "x.pem"}); err == nil {
		t.Error("Start with -cert and no -key succeeded")
	}
	if _, err := Start(context.Background(), Options{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}); err == nil {
		t.Error("Start with missing certificate files succeeded")
	}
	if _, err := Start(context.Background(), Options{UDP: "256.0.0.1:53"}); err == nil {
		t.Error("Start with a bad UDP address succeeded")
	}
}

func TestSummary(t *testing.T) {
	var st nm.Stats
	if got := Summary(st); got != "nmecho: stopped" {
		t.Errorf("Summary(idle) = %q", got)
	}
}

func TestDnsperfUDPNoLoss(t *testing.T) {
	dnsperf := needTool(t, "dnsperf")
	s := start(t)
	addr, _ := s.Addr("udp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, dnsperf, "-m", "udp", "-s", addr.Addr().String(),
		"-p", strconv.Itoa(int(addr.Port())),
		"-d", "../../testdata/queries.txt", "-n", "1", "-c", "8", "-q", "200", "-t", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("dnsperf: %v\n%s", err, out)
	}
	for _, want := range []string{"Queries completed:    2000 (100.00%)", "Queries lost:         0 (0.00%)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dnsperf output lacks %q:\n%s", want, out)
		}
	}
}

func TestStreamEcho(t *testing.T) {
	s, err := Start(context.Background(), Options{Echo: "127.0.0.1:0", TLSEcho: "127.0.0.1:0", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plain, _ := s.Addr("echo")
	secure, _ := s.Addr("tls-echo")
	c1, err := net.Dial("tcp", plain.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := tls.Dial("tcp", secure.String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for _, c := range []net.Conn{c1, c2} {
		c.SetDeadline(time.Now().Add(nmtest.Timeout))
		msg := []byte("echo me")
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Errorf("echo %q, %v; want %q", got, err, msg)
		}
	}
}
