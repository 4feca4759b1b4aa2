package dnsmsg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

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

// rawH2 is an HTTP/2 client made of x/net/http2's Framer and hpack, for
// requests a well-behaved client would not send.
type rawH2 struct {
	t    testing.TB
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	dec  *hpack.Decoder
}

func dialRawH2(t testing.TB, addr string) *rawH2 {
	t.Helper()
	conf := clientTLS.Clone()
	conf.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	r := &rawH2{t: t, conn: c, fr: http2.NewFramer(c, c)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.dec = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

// headers sends a request's header block on stream id; end ends the stream.
func (r *rawH2) headers(id uint32, end bool, kv ...string) {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		r.t.Fatal(err)
	}
}

// get is the header list of a GET request for path.
func get(addr, path string) []string {
	return []string{":method", "GET", ":scheme", "https", ":authority", addr, ":path", path}
}

// ended reads frames (answering nothing) until the server ends the
// connection, and reports whether it did so within the timeout.
func (r *rawH2) ended(timeout time.Duration) bool {
	r.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			return true
		}
	}
}

// closed reads frames until the server has closed each of the streams
// ids (sent RST_STREAM, or ended a stream the client had ended too) and
// returns the status each got (0: reset without one).
func (r *rawH2) closed(clientEnded bool, ids ...uint32) map[uint32]int {
	r.t.Helper()
	got := map[uint32]int{}
	open := map[uint32]bool{}
	for _, id := range ids {
		open[id] = true
	}
	for len(open) > 0 {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("with %d streams open: %v", len(open), err)
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fields, err := r.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				r.t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					got[id], _ = strconv.Atoi(hf.Value)
				}
			}
			if f.StreamEnded() && clientEnded {
				delete(open, id)
			}
		case *http2.DataFrame:
			if f.StreamEnded() && clientEnded {
				delete(open, id)
			}
		case *http2.RSTStreamFrame:
			if _, ok := got[id]; !ok {
				got[id] = 0
			}
			delete(open, id)
		case *http2.GoAwayFrame:
			r.t.Fatalf("GOAWAY with %d streams open: %v", len(open), f.ErrCode)
		}
	}
	return got
}
