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
	behindBalancer(t, "dnsdist",
		func(listen, backend string) string {
			return fmt.Sprintf("setLocal(%q)\nnewServer({address=%q, useProxyProtocol=true})\n", listen, backend)
		},
		func(conf string) []string { return []string{"--supervised", "--disable-syslog", "-C", conf} },
		"+notcp", "+tcp")
}

// TestWhoAmIBehindHAProxy: the same with HAProxy's send-proxy-v2, over TCP
// (HAProxy balances streams).
func TestWhoAmIBehindHAProxy(t *testing.T) {
	behindBalancer(t, "haproxy",
		func(listen, backend string) string {
			return fmt.Sprintf(`defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend dns
	bind %s
	default_backend nmecho
backend nmecho
	server nmecho %s send-proxy-v2
`, listen, backend)
		},
		func(conf string) []string { return []string{"-db", "-f", conf} },
		"+tcp")
}

// behindBalancer runs nmecho -proxy -whoami, and the balancer tool in
// front of it with the configuration conf makes, and checks that dig from
// 127.0.0.2 through the balancer sees its own address, with each of the
// dig options modes.
func behindBalancer(t *testing.T, tool string, conf func(listen, backend string) string, args func(conf string) []string, modes ...string) {
	bin := needTool(t, tool)
	dig := needTool(t, "dig")
	// The balancer reaches its backend on one port over UDP and TCP.
	backend := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s, err := Start(context.Background(), Options{UDP: backend, TCP: backend, Proxy: true, WhoAmI: true, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	port := freePort(t)
	dir := t.TempDir()
	confPath := filepath.Join(dir, tool+".conf")
	if err := os.WriteFile(confPath, []byte(conf(fmt.Sprintf("127.0.0.1:%d", port), backend)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args(confPath)...)
	logFile, err := os.Create(filepath.Join(dir, tool+".log"))
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
	for _, mode := range modes {
		var answer string
		// The balancer answers once it has started and found its backend
		// up; until then dig fails, and is tried again (bounded).
		for try := 0; try < 50; try++ {
			b, err := exec.CommandContext(ctx, dig, "-b", "127.0.0.2", "@127.0.0.1", "-p", strconv.Itoa(port),
				mode, "+short", "+tries=1", "+time=1", "whoami.example.", "A").CombinedOutput()
			answer = strings.TrimSpace(string(b))
			if err == nil && answer != "" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if answer != "127.0.0.2" {
			log, _ := os.ReadFile(logFile.Name())
			t.Errorf("dig %s through %s: %q; want 127.0.0.2\n%s:\n%s", mode, tool, answer, tool, log)
		}
	}
}
