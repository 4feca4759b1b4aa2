package dig

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rainbowduck/netmgr/internal/echo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer starts nmecho's server on loopback, on every transport, and
// returns the upstream URI of each.
func echoServer(t *testing.T) map[string]string {
	t.Helper()
	s, err := echo.Start(context.Background(), echo.Options{UDP: "127.0.0.1:0", TCP: "127.0.0.1:0",
		DoT: "127.0.0.1:0", DoH: "127.0.0.1:0", Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	uris := map[string]string{}
	for name, scheme := range map[string]string{"udp": "udp://", "tcp": "tcp://", "dot": "tls://", "doh": "https://"} {
		a, ok := s.Addr(name)
		if !ok {
			t.Fatalf("no %s listener", name)
		}
		uris[name] = scheme + a.String()
	}
	uris["doh"] += "/dns-query"
	return uris
}

func run(t *testing.T, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestNmdig: one query prints the reply with its question, and -n 200
// -c 16 prints the rate and percentiles with every query answered, over
// UDP, TCP, DoT and DoH against nmecho.
func TestNmdig(t *testing.T) {
	uris := echoServer(t)
	for _, kind := range []string{"udp", "tcp", "dot", "doh"} {
		t.Run(kind, func(t *testing.T) {
			code, out, errOut := run(t, "-s", uris[kind], "-k", "example.org", "TXT")
			if code != 0 || !strings.Contains(out, ";example.org.\tIN\t TXT") || !strings.Contains(out, "status: NOERROR") {
				t.Errorf("nmdig one query: exit %d, output %q, errors %q; want the reply", code, out, errOut)
			}
			code, out, errOut = run(t, "-s", uris[kind], "-k", "-n", "200", "-c", "16", "example.org")
			if code != 0 || !strings.Contains(out, "200 answered, 0 failed") || !strings.Contains(out, "latency p50") {
				t.Errorf("nmdig -n 200: exit %d, output %q, errors %q; want 200 answered", code, out, errOut)
			}
		})
	}
}

// TestNmdigErrors: bad usage exits 2, an unreachable upstream 1 with the
// error said.
func TestNmdigErrors(t *testing.T) {
	if code, _, _ := run(t, "-s", "udp://127.0.0.1:1"); code != 2 {
		t.Errorf("nmdig without a name: exit %d; want 2", code)
	}
	if code, _, _ := run(t, "example.org", "NOSUCHTYPE"); code != 2 {
		t.Errorf("nmdig with a bad type: exit %d; want 2", code)
	}
	code, _, errOut := run(t, "-s", "tcp://127.0.0.1:1", "-t", "1s", "example.org")
	if code != 1 || !strings.Contains(errOut, "refused") {
		t.Errorf("nmdig to a closed port: exit %d, errors %q; want 1 and refused", code, errOut)
	}
}
