package dnsmsg

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/rainbowduck/netmgr/internal/core"
)

// ErrUpstreamDown is returned at once by Client calls to an upstream that
// failed ClientConfig.MaxFailures times in a row, until its backoff ends.
var ErrUpstreamDown = errors.New("dnsmsg: upstream down")

// upstreamKind is the transport of an upstream.
type upstreamKind int

const (
	upUDP upstreamKind = iota
	upTCP
	upTLS
	upHTTPS
)

var upstreamNames = [...]string{"udp", "tcp", "tls", "https"}

func (k upstreamKind) String() string { return upstreamNames[k] }

// transport is the transport an upstream of kind k counts on.
func (k upstreamKind) transport() core.Transport {
	return [...]core.Transport{core.UDP, core.TCP, core.TLS, core.HTTP}[k]
}

// target is a parsed upstream URI.
type target struct {
	kind upstreamKind
	addr string   // host:port to dial
	url  *url.URL // DoH only
}

// parseUpstream parses an upstream URI: "udp://host[:port]" (53),
// "tcp://host[:port]" (53), "tls://host[:port]" (853),
// "https://host[:port]/path" (443; "http://" for cleartext HTTP/2), or a
// bare "host:port", which means UDP.
func parseUpstream(s string) (target, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "udp", s
	}
	var kind upstreamKind
	port := "53"
	switch scheme {
	case "udp":
	case "tcp":
		kind = upTCP
	case "tls":
		kind, port = upTLS, "853"
	case "https", "http":
		u, addr, err := ParseURI(s)
		if err != nil {
			return target{}, err
		}
		return target{kind: upHTTPS, addr: addr, url: u}, nil
	default:
		return target{}, fmt.Errorf("%w: upstream %q: unknown scheme %q", ErrBadURI, s, scheme)
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" || strings.ContainsAny(rest, "/?#@") {
		return target{}, fmt.Errorf("%w: upstream %q: want scheme://host[:port]", ErrBadURI, s)
	}
	if _, _, err := net.SplitHostPort(rest); err != nil {
		if strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "[") {
			rest = "[" + rest + "]" // a bare IPv6 address
		}
		rest = net.JoinHostPort(strings.Trim(rest, "[]"), port)
	}
	return target{kind: kind, addr: rest}, nil
}
