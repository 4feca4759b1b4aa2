package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/nm"
)

// hkind is one way of sending DoH queries: GET or POST. Every DoH scenario
// runs with both, each without a quota and with a quota of 1.
type hkind struct {
	name     string
	get      bool
	maxConns int
}

var hkinds = []hkind{{"get", true, 0}, {"post", false, 0}}

// forDoH runs a scenario with GET and POST.
func forDoH(t *testing.T, fn func(t *testing.T, k hkind)) {
	for _, k := range hkinds {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}

// forDoHAndQuota runs a scenario with GET and POST, each without a quota
// and with a quota of 1 connection.
func forDoHAndQuota(t *testing.T, fn func(t *testing.T, k hkind)) {
	for _, k := range hkinds {
		for _, q := range []int{0, 1} {
			k.maxConns = q
			t.Run(fmt.Sprintf("%s/quota%d", k.name, q), func(t *testing.T) { fn(t, k) })
		}
	}
}

func (k hkind) listen(t testing.TB, m *nm.Manager, cfg dnsmsg.HTTPConfig) *dnsmsg.HTTPListener {
	t.Helper()
	if cfg.Stream.MaxConns == 0 {
		cfg.Stream.MaxConns = k.maxConns
	}
	l, err := dnsmsg.ListenHTTPS(context.Background(), m, "127.0.0.1:0", serverTLS, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// requests is the channel of the default endpoint of l.
func requests(l *dnsmsg.HTTPListener) <-chan nm.Event {
	return l.Endpoints().Requests(dnsmsg.DefaultPath)
}

func dohURI(l *dnsmsg.HTTPListener) string {
	return "https://" + l.Addr().String() + dnsmsg.DefaultPath
}

func (k hkind) dialErr(m *nm.Manager, l *dnsmsg.HTTPListener, cfg dnsmsg.ClientConfig) (*dnsmsg.Conn, error) {
	cfg.HTTPGet = k.get
	return dnsmsg.DialHTTPS(context.Background(), m, dohURI(l), clientTLS, cfg)
}

func (k hkind) dial(t testing.TB, m *nm.Manager, l *dnsmsg.HTTPListener, cfg dnsmsg.ClientConfig) *dnsmsg.Conn {
	t.Helper()
	c, err := k.dialErr(m, l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpClient is a plain net/http client over x/net/http2 that counts the
// connections it opens, for requests our client would not send.
type httpClient struct {
	*http.Client
	dials int
}

func newHTTPClient(t testing.TB) *httpClient {
	hc := &httpClient{}
	tr := &http2.Transport{
		TLSClientConfig: clientTLS,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			hc.dials++
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
		},
	}
	hc.Client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return hc
}

// post sends body with the content type ct and returns the status, the
// headers and the body of the response.
func (hc *httpClient) do(t testing.TB, method, uri, ct string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, uri, r)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %.60s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// longQuery returns a query string value of n characters.
func longQuery(n int) string { return strings.Repeat("A", n) }
