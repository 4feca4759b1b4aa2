package echo

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

func TestKdigOverHTTPS(t *testing.T) {
	for _, method := range []string{"+https", "+https-get"} {
		t.Run(method, func(t *testing.T) {
			s := startAll(t)
			a := addrOf(t, s, "doh")
			out := run(t, "kdig", "@"+a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
				method, "+timeout=5", "+retry=0", "doh.example.", "A")
			want := "HTTP/2-POST"
			if method == "+https-get" {
				want = "HTTP/2-GET"
			}
			contains(t, out, "status: NOERROR", "qr", "doh.example.", want, "status: 200")
			s.Close()
			if st := s.Manager().Stats().Of(nm.HTTP); st.Received != 1 || st.Sent != 1 {
				t.Errorf("HTTP stats %+v; want 1 received, 1 sent", st)
			}
		})
	}
}

func TestDigOverHTTPS(t *testing.T) {
	for _, method := range []string{"+https", "+https-get"} {
		t.Run(method, func(t *testing.T) {
			s := startAll(t)
			a := addrOf(t, s, "doh")
			out := run(t, "dig", "@"+a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
				method, "+tries=1", "+time=5", "dig.example.", "AAAA")
			contains(t, out, "status: NOERROR", "flags: qr", ";dig.example.", "(HTTPS")
		})
	}
}

// TestCurlErrorStatuses sends every bad request with curl over HTTP/2 in
// one invocation: each gets its status, on the one connection curl opened.
func TestCurlErrorStatuses(t *testing.T) {
	s := startAll(t)
	a := addrOf(t, s, "doh")
	base := "https://" + a.String()
	uri := base + dnsmsg.DefaultPath
	q := new(dns.Msg)
	q.SetQuestion("curl.example.", dns.TypeA)
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return "@" + p
	}
	query, big := file("query", wire), file("big", make([]byte, dnsmsg.MaxSize+1))
	b64 := base64.RawURLEncoding.EncodeToString(wire)
	ct := "content-type: " + dnsmsg.ContentType
	cases := []struct {
		want string
		args []string
	}{
		{"200", []string{uri + "?dns=" + b64}},
		{"400", []string{uri + "?dns=!!!"}},
		{"400", []string{uri}},
		{"404", []string{base + "/nothing-here?dns=" + b64}},
		{"405", []string{"-X", "PUT", "-H", ct, "--data-binary", query, uri}},
		{"413", []string{"-H", ct, "--data-binary", big, uri}},
		{"414", []string{uri + "?dns=" + b64 + "&pad=" + strings.Repeat("a", 20<<10)}},
		{"415", []string{"-H", "content-type: text/plain", "--data-binary", query, uri}},
		{"200", []string{"-H", ct, "--data-binary", query, uri}},
	}
	args := []string{}
	for i, c := range cases {
		if i > 0 {
			args = append(args, "--next")
		}
		args = append(args, "-sk", "--http2", "-o", "/dev/null",
			"-w", "%{http_code} %{http_version} %{num_connects} %header{allow}\\n")
		args = append(args, c.args...)
	}
	lines := strings.Split(strings.TrimSpace(run(t, "curl", args...)), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("curl printed %d lines; want %d:\n%s", len(lines), len(cases), strings.Join(lines, "\n"))
	}
	for i, c := range cases {
		f := strings.Fields(lines[i])
		if len(f) < 3 || f[0] != c.want || f[1] != "2" {
			t.Errorf("request %d (%v): %q; want status %s over HTTP/2", i, c.args, lines[i], c.want)
			continue
		}
		if wantConnects := map[bool]string{true: "1", false: "0"}[i == 0]; f[2] != wantConnects {
			t.Errorf("request %d: %s new connections; want %s (errors keep the connection)", i, f[2], wantConnects)
		}
		if c.want == "405" && (len(f) < 5 || strings.Join(f[3:], " ") != "GET, POST") {
			t.Errorf("405 without Allow: GET, POST: %q", lines[i])
		}
	}
}

func TestDnsperfDoHNoLoss(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			s := startAll(t)
			a := addrOf(t, s, "doh")
			out := run(t, "dnsperf", "-m", "doh", "-O", "doh-method="+method,
				"-s", a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
				"-d", "../../testdata/queries.txt", "-n", "1", "-c", "4", "-q", "200", "-t", "10")
			contains(t, out, "Queries completed:    2000 (100.00%)", "Queries lost:         0 (0.00%)")
		})
	}
}

// TestH2specConformance runs h2spec, the HTTP/2 conformance suite (RFC
// 7540/9113 and HPACK, 145 cases), against the DoH listener: every case
// must pass. .ci/run installs it (go install
// github.com/summerwind/h2spec/cmd/h2spec).
func TestH2specConformance(t *testing.T) {
	s := startAll(t)
	a := addrOf(t, s, "doh")
	out := run(t, "h2spec", "-h", a.Addr().String(), "-p", strconv.Itoa(int(a.Port())),
		"-t", "-k", "--path", dnsmsg.DefaultPath)
	contains(t, out, "0 failed")
	if t.Failed() {
		return
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	t.Log(lines[len(lines)-1])
}
