package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// build builds nmecho into a temporary directory.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nmecho")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// start runs nmecho with args and returns it, its output lines, and the
// addresses it listens on by name.
func start(t *testing.T, bin string, args ...string) (*exec.Cmd, *bufio.Scanner, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if !slices.Contains(args, "-doq") {
		// Off, rather than its fixed default port, which anything else
		// on the machine may hold.
		args = append(args, "-doq", "")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	lines, addrs := startCmd(t, cmd)
	return cmd, lines, addrs
}

// startCmd starts cmd, an nmecho, and returns its output lines and the
// addresses it listens on by name.
func startCmd(t *testing.T, cmd *exec.Cmd) (*bufio.Scanner, map[string]string) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	addrs := map[string]string{}
	re := regexp.MustCompile(`^nmecho: (\S+) on (\S+)$`)
	for lines.Scan() && !strings.Contains(lines.Text(), "Ctrl-C stops") {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			addrs[m[1]] = m[2]
		}
	}
	if len(addrs) == 0 {
		t.Fatal("nmecho did not say where it listens")
	}
	return lines, addrs
}

// TestSIGTERMExitsZeroWithSummary runs the real binary, queries it, stops it
// with SIGTERM and checks the exit status and the summary line.
func TestSIGTERMExitsZeroWithSummary(t *testing.T) {
	cmd, lines, addrs := start(t, build(t), "-udp", "127.0.0.1:0", "-tcp", "", "-dot", "", "-doh", "", "-workers", "2")
	addr := addrs["udp"]
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

// TestSIGTERMUnderLoad: with clients loading every transport, SIGTERM
// makes nmecho exit with status 0 within 5 seconds.
func TestSIGTERMUnderLoad(t *testing.T) {
	cmd, lines, addrs := start(t, build(t), "-udp", "127.0.0.1:0", "-tcp", "127.0.0.1:0", "-dot", "127.0.0.1:0",
		"-doh", "127.0.0.1:0", "-workers", "2")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered atomic.Int64
	for _, c := range []*dns.Client{
		{Net: "udp", Timeout: time.Second},
		{Net: "tcp", Timeout: time.Second},
		{Net: "tcp-tls", Timeout: time.Second, TLSConfig: &tls.Config{InsecureSkipVerify: true}},
	} {
		addr := addrs[map[string]string{"udp": "udp", "tcp": "tcp", "tcp-tls": "dot"}[c.Net]]
		for i := 0; i < 4; i++ {
			wg.Go(func() {
				conn, err := c.Dial(addr)
				if err != nil {
					return
				}
				defer conn.Close()
				q := new(dns.Msg)
				q.SetQuestion("load.test.", dns.TypeA)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, _, err := c.ExchangeWithConn(q, conn); err != nil {
						return
					}
					answered.Add(1)
				}
			})
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			q := new(dns.Msg)
			q.SetQuestion("doh.test.", dns.TypeA)
			b, _ := q.Pack()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Post("https://"+addrs["doh"]+"/dns-query", "application/dns-message", bytes.NewReader(b))
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered.Add(1)
			}
		})
	}
	for answered.Load() < 1000 {
		time.Sleep(time.Millisecond) // polling a counter until the load is on
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	for lines.Scan() {
	}
	err := cmd.Wait()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("exit under load: %v; want status 0", err)
	}
	if took > 5*time.Second {
		t.Errorf("exit took %v under load; want at most 5s", took)
	}
	t.Logf("exited %v after SIGTERM, %d exchanges answered before", took, answered.Load())
}

// TestSIGTERMDrains: answers in progress when SIGTERM comes reach their
// clients on UDP, TCP and DNS over TLS before nmecho exits with status 0.
func TestSIGTERMDrains(t *testing.T) {
	cmd, lines, addrs := start(t, build(t), "-udp", "127.0.0.1:0", "-tcp", "127.0.0.1:0", "-dot", "127.0.0.1:0",
		"-doh", "", "-workers", "2", "-delay", "500ms", "-drain", "10s", "-report", "10ms")
	clients := []*dns.Client{
		{Net: "udp", Timeout: 10 * time.Second},
		{Net: "tcp", Timeout: 10 * time.Second},
		{Net: "tcp-tls", Timeout: 10 * time.Second, TLSConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	errs := make(chan error, len(clients))
	for _, c := range clients {
		addr := addrs[map[string]string{"udp": "udp", "tcp": "tcp", "tcp-tls": "dot"}[c.Net]]
		go func() {
			q := new(dns.Msg)
			q.SetQuestion("drain.test.", dns.TypeA)
			r, _, err := c.Exchange(q, addr)
			if err == nil && !r.Response {
				err = errors.New("not a response")
			}
			errs <- err
		}()
	}
	// Every query is in progress (received, answer delayed): stop now.
	re := regexp.MustCompile(` received=(\d+) `)
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil && m[1] == strconv.Itoa(len(clients)) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for range clients {
		if err := <-errs; err != nil {
			t.Errorf("a query in progress at SIGTERM: %v", err)
		}
	}
	drained := false
	for lines.Scan() {
		drained = drained || strings.HasPrefix(lines.Text(), "nmecho: draining")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v; want status 0", err)
	}
	if !drained {
		t.Error("nmecho did not say it drains")
	}
}

// TestMetrics scrapes nmecho's Prometheus endpoint after a query.
func TestMetrics(t *testing.T) {
	cmd, _, addrs := start(t, build(t), "-udp", "127.0.0.1:0", "-tcp", "", "-dot", "", "-doh", "",
		"-workers", "1", "-metrics", "127.0.0.1:0")
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	q := new(dns.Msg)
	q.SetQuestion("metrics.test.", dns.TypeA)
	if _, _, err := new(dns.Client).Exchange(q, addrs["udp"]); err != nil {
		t.Fatal(err)
	}
	wants := []string{
		`netmgr_messages_received_total{transport="udp"} 1`,
		`netmgr_messages_sent_total{transport="udp"} 1`,
		`netmgr_shard_messages_sent_total{shard="0",transport="udp"} 1`,
	}
	// A reply is counted sent once its sendmmsg returns, which can be
	// after the client has it: scrape again until it is, within a bound.
	var body []byte
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err := http.Get("http://" + addrs["metrics"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), wants[1]+"\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, bounded above
	}
	for _, want := range wants {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("no %q in the scrape:\n%s", want, body)
		}
	}
}
