package echo

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/certs"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/nm/nmtest"
)

// startDoQ starts an echo server with a DoQ listener on loopback.
func startDoQ(t *testing.T) *Server {
	t.Helper()
	s, err := Start(context.Background(), Options{DoQ: "127.0.0.1:0", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// kdigQUIC returns kdig if it speaks DoQ (+quic), and skips the test
// otherwise, in CI too: Debian 12's knot-dnsutils 3.2.6 is built without
// ngtcp2 and has no +quic.
func kdigQUIC(t *testing.T) string {
	t.Helper()
	kdig := needTool(t, "kdig")
	out, _ := exec.Command(kdig, "-h").CombinedOutput()
	if !strings.Contains(string(out), "+quic") {
		t.Skip("kdig has no +quic (it needs knot-dnsutils built with ngtcp2; Debian 12's is not)")
	}
	return kdig
}

func TestKdigOverQUIC(t *testing.T) {
	kdig := kdigQUIC(t)
	s := startDoQ(t)
	a := addrOf(t, s, "doq")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kdig, "@"+a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
		"+quic", "+timeout=5", "+retry=0", "+padding", "doq.example.", "A").CombinedOutput()
	if err != nil {
		t.Fatalf("kdig +quic: %v\n%s", err, out)
	}
	contains(t, string(out), "status: NOERROR", "qr", "doq.example.", "QUIC")
	s.Close()
	if st := s.Manager().Stats().Of(nm.QUIC); st.Accepted != 1 || st.Received != 1 || st.Sent != 1 {
		t.Errorf("QUIC stats %+v; want 1 accepted, 1 received, 1 sent", st)
	}
}

// corednsBinary returns a CoreDNS binary: $COREDNS, the one .ci/run and
// the benchmarks build into the bench cache, or one on PATH. Outside CI,
// without one, the test skips.
func corednsBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COREDNS"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if home, err := os.UserHomeDir(); cache == "" && err == nil {
		cache = filepath.Join(home, ".cache")
	}
	if p := filepath.Join(cache, "netmgr-bench", "coredns"); cache != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("coredns"); err == nil {
		return p
	}
	nmtest.SkipOutsideCI(t, "no CoreDNS binary ($COREDNS, the bench cache or PATH): DoQ client interop not tested")
	return ""
}

// freeUDPPort returns a loopback UDP port free at the time of the call.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// Our DoQ client against CoreDNS's quic:// server (whoami).
func TestDoQClientAgainstCoreDNS(t *testing.T) {
	bin := corednsBinary(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeLocalhostCert(t, certFile, keyFile)
	port := freeUDPPort(t)
	corefile := fmt.Sprintf("quic://.:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n\twhoami\n}\n", port, certFile, keyFile)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-conf", filepath.Join(dir, "Corefile"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	waitForLine(t, stdout, "CoreDNS-")

	m := nmtest.Manager(t, 1)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, err := dnsmsg.DialQUIC(ctx, m, addr, &tls.Config{InsecureSkipVerify: true}, dnsmsg.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		q := new(dns.Msg)
		q.SetQuestion("whoami.example.", dns.TypeA)
		q.Id = uint16(4242 + i)
		r, err := c.Exchange(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if r.Id != q.Id || r.Rcode != dns.RcodeSuccess || len(r.Extra) == 0 {
			t.Errorf("reply %v; want CoreDNS's whoami answer with ID %d", r, q.Id)
		}
	}
}

// waitForLine reads r until a line holding want, within the test's
// minute; the rest of r is discarded in the background.
func waitForLine(t *testing.T, r interface{ Read([]byte) (int, error) }, want string) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			go func() {
				for sc.Scan() {
				}
			}()
			return
		}
	}
	t.Fatalf("the server exited before printing %q", want)
}

// writeLocalhostCert writes a self-signed localhost certificate and its
// key as PEM files.
func writeLocalhostCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	cert, err := certs.Localhost()
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	c := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	k := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})
	if err := os.WriteFile(certFile, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
}
