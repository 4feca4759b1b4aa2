package main

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSIGTERMExitsZeroWithSummary runs the real binary, queries it, stops it
// with SIGTERM and checks the exit status and the summary line.
func TestSIGTERMExitsZeroWithSummary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nmecho")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-udp", "127.0.0.1:0", "-tcp", "", "-dot", "", "-doh", "", "-workers", "2")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	addr := ""
	re := regexp.MustCompile(`^nmecho: udp on (\S+)$`)
	for addr == "" && lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatal("nmecho did not say where it listens")
	}
	q := new(dns.Msg)
	q.SetQuestion("sigterm.test.", dns.TypeA)
	if _, _, err := new(dns.Client).Exchange(q, addr); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v; want status 0", err)
	}
	last := ""
	if len(rest) > 0 {
		last = rest[len(rest)-1]
	}
	if !strings.HasPrefix(last, "nmecho: stopped; udp: received 1, sent 1, dropped 0") {
		t.Errorf("last line %q; want the stats summary", last)
	}
}
