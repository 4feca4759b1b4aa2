package echo

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback port free for both UDP and TCP right now.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// TestWhoAmIBehindDnsdist puts dnsdist, sending PROXY v2 headers, in front
// of nmecho -proxy -whoami: a client querying from 127.0.0.2 through the
// balancer (itself on 127.0.0.1) sees 127.0.0.2 in the answer, over UDP
// and TCP.
func TestWhoAmIBehindDnsdist(t *testing.T) {
	dnsdist := needTool(t, "dnsdist")
	// dnsdist reaches its backend on one port over UDP and TCP.
	backend := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s, err := Start(context.Background(), Options{UDP: backend, TCP: backend, Proxy: true, WhoAmI: true, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	port := freePort(t)
	conf := filepath.Join(t.TempDir(), "dnsdist.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`setLocal("127.0.0.1:%d")
newServer({address="%s", useProxyProtocol=true})
`, port, backend)), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, dnsdist, "--supervised", "--disable-syslog", "-C", conf)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "dnsdist.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	dig := needTool(t, "dig")
	for _, tcp := range []string{"+notcp", "+tcp"} {
		var answer string
		// dnsdist answers once it has started and found its backend up;
		// until then dig fails, and is tried again (bounded).
		for try := 0; try < 50; try++ {
			b, err := exec.CommandContext(ctx, dig, "-b", "127.0.0.2", "@127.0.0.1", "-p", strconv.Itoa(port),
				tcp, "+short", "+tries=1", "+time=1", "whoami.example.", "A").CombinedOutput()
			answer = strings.TrimSpace(string(b))
			if err == nil && answer != "" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if answer != "127.0.0.2" {
			log, _ := os.ReadFile(logFile.Name())
			t.Errorf("dig %s through dnsdist: %q; want 127.0.0.2\ndnsdist:\n%s", tcp, answer, log)
		}
	}
}
