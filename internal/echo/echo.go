// Package echo is the DNS echo server behind cmd/nmecho: it answers every
// DNS request with the same message, QR bit set, on every transport asked
// for.
package echo

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/rainbowduck/netmgr/dnsmsg"
	"github.com/rainbowduck/netmgr/internal/certs"
	"github.com/rainbowduck/netmgr/nm"
	"github.com/rainbowduck/netmgr/proxyproto"
	"github.com/rainbowduck/netmgr/stream"
)

// Options says where to listen. An empty address turns that listener off.
type Options struct {
	UDP, TCP, DoT, DoH string // DNS listeners
	DoQ                string // DNS over QUIC listener
	Echo, TLSEcho      string // raw stream echo listeners
	CertFile, KeyFile  string // PEM files; both empty: a self-signed localhost certificate
	Workers            int    // shards; zero: one per CPU
	// Proxy expects a PROXY protocol v2 header on every DNS listener (in
	// front of each UDP datagram, at the start of each connection, before
	// TLS), from any peer.
	Proxy bool
	// WhoAmI answers each query with the client's address (an A or AAAA
	// record for the question's name) instead of echoing it.
	WhoAmI bool
	// Sockets holds sockets passed in (see Activated), by listener name
	// ("udp", "tcp", "dot", "doh", "echo", "tls-echo"): a listener with
	// sockets serves them instead of binding its address, and runs even
	// if its address is empty.
	Sockets map[string]nm.SocketConfig
	// MaxConns caps the connections of each stream listener (TCP, DoT,
	// DoH, the raw echoes); past it a new connection is closed at once,
	// counted Refused. If zero, DefaultMaxConns; negative: no cap.
	MaxConns int
	// Report, if set, makes Run print a line of live figures (goroutines,
	// heap, messages) at this interval, for soak runs.
	Report time.Duration
	// Drain bounds how long Run lets the answers in progress go out when
	// it stops (the listeners' Shutdown); zero: it closes at once.
	Drain time.Duration
	// Delay makes every answer wait this long, as a slow backend would.
	Delay time.Duration
	// Metrics, if set, is the address of an HTTP server of Prometheus
	// metrics at /metrics.
	Metrics string
	// Logger, if set, receives the library's log records (nm.Config.Logger).
	Logger *slog.Logger
}

// DefaultMaxConns is Options.MaxConns's default.
const DefaultMaxConns = 10000

// streamConfig returns the stream config of every stream listener: the
// connection cap.
func (o *Options) streamConfig() stream.Config {
	n := o.MaxConns
	if n == 0 {
		n = DefaultMaxConns
	}
	return stream.Config{MaxConns: max(n, 0), RefuseAtCap: true}
}

// Server is a running echo server.
type Server struct {
	m       *nm.Manager
	addrs   map[string]netip.AddrPort
	wg      sync.WaitGroup
	metrics *http.Server // nil unless Options.Metrics
}

// Start opens every listener o asks for. Close the Server to stop it.
func Start(ctx context.Context, o Options) (*Server, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("nmecho: -cert and -key go together")
	}
	cert, err := certs.Load(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("nmecho: certificate: %w", err)
	}
	m, err := nm.New(nm.Config{Workers: o.Workers, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	s := &Server{m: m, addrs: make(map[string]netip.AddrPort)}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	var cfg dnsmsg.ServerConfig
	var hcfg dnsmsg.HTTPConfig
	cfg.Stream, hcfg.Stream = o.streamConfig(), o.streamConfig()
	if o.Proxy {
		cfg.Proxy = &proxyproto.Policy{}
		hcfg.Stream.Proxy = cfg.Proxy
	}
	hcfg.HTTP1 = true
	answer := echoReply
	if o.WhoAmI {
		answer = whoami
	}
	for _, x := range []struct {
		name, addr string
		listen     func(cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error)
	}{
		{"udp", o.UDP, func(cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenUDP(ctx, m, o.UDP, cfg)
		}},
		{"tcp", o.TCP, func(cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenTCP(ctx, m, o.TCP, cfg)
		}},
		{"dot", o.DoT, func(cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenTLS(ctx, m, o.DoT, tlsConf, cfg)
		}},
		{"doq", o.DoQ, func(cfg dnsmsg.ServerConfig) (*dnsmsg.Listener, error) {
			return dnsmsg.ListenQUIC(ctx, m, o.DoQ, tlsConf, cfg)
		}},
	} {
		sc, passed := o.Sockets[x.name]
		if x.addr == "" && !passed {
			continue
		}
		cfg := cfg
		cfg.Socket = sc
		l, err := x.listen(cfg)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("nmecho: %s: %w", x.name, err)
		}
		s.addrs[x.name] = l.Addr()
		for i := 0; i < m.Workers(); i++ {
			s.wg.Go(func() { s.serve(l.Requests(), answer, o.Delay) })
		}
	}
	if err := s.startEcho(ctx, "echo", o.Echo, o.Sockets["echo"], nil, o.streamConfig()); err != nil {
		return nil, err
	}
	if err := s.startEcho(ctx, "tls-echo", o.TLSEcho, o.Sockets["tls-echo"], tlsConf, o.streamConfig()); err != nil {
		return nil, err
	}
	sc, passed := o.Sockets["doh"]
	if o.DoH != "" || passed {
		hcfg.Stream.Socket = sc
		l, err := dnsmsg.ListenHTTPS(ctx, m, o.DoH, tlsConf, nil, hcfg)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("nmecho: doh: %w", err)
		}
		s.addrs["doh"] = l.Addr()
		reqs := l.Endpoints().Requests(dnsmsg.DefaultPath)
		for i := 0; i < m.Workers(); i++ {
			s.wg.Go(func() { s.serve(reqs, answer, o.Delay) })
		}
	}
	if err := s.startMetrics(o.Metrics); err != nil {
		s.Close()
		return nil, fmt.Errorf("nmecho: metrics: %w", err)
	}
	return s, nil
}

// startEcho starts a raw stream echo listener on addr, or on the sockets
// of sc, if either is set.
func (s *Server) startEcho(ctx context.Context, name, addr string, sc nm.SocketConfig, tlsConf *tls.Config, cfg stream.Config) error {
	if addr == "" && sc.IsZero() {
		return nil
	}
	var l *stream.Listener
	var err error
	cfg.Socket = sc
	if tlsConf != nil {
		l, err = stream.ListenTLS(ctx, s.m, addr, tlsConf, cfg)
	} else {
		l, err = stream.Listen(ctx, s.m, addr, cfg)
	}
	if err != nil {
		s.m.Close()
		return fmt.Errorf("nmecho: %s: %w", name, err)
	}
	s.addrs[name] = l.Addr()
	s.wg.Go(func() {
		for ev := range l.Conns() {
			if ev.Err != nil {
				continue
			}
			s.wg.Go(func() { echoStream(ev.Handle) })
		}
	})
	return nil
}

// echoStream sends back every chunk read on h until its final event.
func echoStream(h nm.Handle) {
	defer h.Detach()
	for ev := range h.Read() {
		if ev.Err != nil {
			return
		}
		if h.Send(ev.Data) != nil {
			h.Close()
		}
	}
}

// serve answers requests until the listener's channel closes, each after
// delay if it is not zero.
func (s *Server) serve(reqs <-chan nm.Event, answer func(h nm.Handle, req []byte) []byte, delay time.Duration) {
	for ev := range reqs {
		if ev.Err != nil {
			continue // the final event; the channel closes next
		}
		if delay > 0 {
			s.wg.Add(1)
			time.AfterFunc(delay, func() {
				defer s.wg.Done()
				reply(ev, answer)
			})
			continue
		}
		reply(ev, answer)
	}
}

// reply answers one request and releases it.
func reply(ev nm.Event, answer func(h nm.Handle, req []byte) []byte) {
	if b := answer(ev.Handle, ev.Data); b != nil {
		ev.Handle.Send(b) // failures are counted in the stats
	}
	ev.Handle.Detach()
}

// echoReply answers a request with itself, QR set (and the keepalive
// option answered on streams), mostly in place.
func echoReply(h nm.Handle, req []byte) []byte {
	reply := req
	if d, ok := dnsmsg.KeepaliveTimeout(h); ok {
		reply = keepalive(h, reply, d)
	}
	dnsmsg.SetResponse(reply)
	return reply
}

// whoami answers a request with the client's address as the handle
// reports it (behind a PROXY load balancer: the client's, not the
// balancer's), as an A or AAAA record for the question's name.
func whoami(h nm.Handle, req []byte) []byte {
	q, err := dnsmsg.Parse(req)
	if err != nil || len(q.Question) != 1 {
		return nil
	}
	r := new(dns.Msg)
	r.SetReply(q)
	r.Authoritative = true
	hdr := dns.RR_Header{Name: q.Question[0].Name, Class: dns.ClassINET}
	if a := h.PeerAddr().Addr().Unmap(); a.Is4() {
		hdr.Rrtype = dns.TypeA
		r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
	} else {
		hdr.Rrtype = dns.TypeAAAA
		r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
	}
	b, err := r.Pack()
	if err != nil {
		return nil
	}
	return b
}

// keepalive answers an EDNS tcp-keepalive option (RFC 7828) in a stream
// request: the connection is kept alive, and the reply carries the timeout.
// Other requests are returned as they are, unparsed.
func keepalive(h nm.Handle, req []byte, d time.Duration) []byte {
	if len(req) < dnsmsg.HeaderLen || binary.BigEndian.Uint16(req[10:]) == 0 {
		return req // no additional record, so no OPT
	}
	m, err := dnsmsg.Parse(req)
	if err != nil {
		return req
	}
	opt := m.IsEdns0()
	if opt == nil {
		return req
	}
	for _, o := range opt.Option {
		if ka, ok := o.(*dns.EDNS0_TCP_KEEPALIVE); ok {
			h.SetKeepalive(true)
			ka.Timeout = uint16(min(d/(100*time.Millisecond), 0xffff))
			if b, err := m.Pack(); err == nil {
				return b
			}
		}
	}
	return req
}

// Addr returns the bound address of a listener ("udp", ...), if it runs.
func (s *Server) Addr(name string) (netip.AddrPort, bool) {
	a, ok := s.addrs[name]
	return a, ok
}

// Manager returns the server's manager.
func (s *Server) Manager() *nm.Manager { return s.m }

// Close stops every listener and waits for the server to finish.
func (s *Server) Close() {
	s.stopMetrics()
	s.m.Close()
	s.wg.Wait()
}

// Shutdown drains every listener until the answers in progress have gone
// or ctx ends, then closes the server as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.m.Shutdown(ctx)
	s.stopMetrics()
	s.wg.Wait()
	return err
}

// Run serves until ctx is done, writing what it listens on and, at the
// end, a one-line summary of the stats to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	s, err := Start(ctx, o)
	if err != nil {
		return err
	}
	for _, name := range []string{"udp", "tcp", "dot", "doh", "doq", "echo", "tls-echo", "metrics"} {
		if a, ok := s.addrs[name]; ok {
			fmt.Fprintf(out, "nmecho: %s on %s\n", name, a)
			if name == "doh" {
				fmt.Fprintf(out, "nmecho: doh endpoint https://%s%s\n", a, dnsmsg.DefaultPath)
			}
			if name == "metrics" {
				fmt.Fprintf(out, "nmecho: metrics at http://%s/metrics\n", a)
			}
		}
	}
	fmt.Fprintf(out, "nmecho: %d workers; Ctrl-C stops\n", s.m.Workers())
	if o.Report > 0 {
		report(ctx, o.Report, s.m, out)
	}
	<-ctx.Done()
	if o.Drain > 0 {
		fmt.Fprintf(out, "nmecho: draining (at most %v)\n", o.Drain)
		dctx, cancel := context.WithTimeout(context.Background(), o.Drain)
		if err := s.Shutdown(dctx); err != nil {
			fmt.Fprintf(out, "nmecho: drain cut short: %v\n", err)
		}
		cancel()
	} else {
		s.Close()
	}
	fmt.Fprintln(out, Summary(s.m.Stats()))
	return nil
}

// Summary renders the counters of every transport that was used on one line.
func Summary(st nm.Stats) string {
	var b strings.Builder
	b.WriteString("nmecho: stopped;")
	for t := nm.UDP; t <= nm.QUIC; t++ {
		c := st.Of(t)
		if c.Opened == 0 && c.BindFailed == 0 && c.Received == 0 {
			continue
		}
		fmt.Fprintf(&b, " %s: received %d, sent %d, dropped %d, failed recv %d send %d;",
			t, c.Received, c.Sent, c.Dropped, c.RecvFailed, c.SendFailed)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// report prints live figures every interval until ctx is done: messages
// received and sent and the read and write system calls that carried them;
// for each transport, what was refused or cut off, by reason, where not
// zero (tcp-shed=N, http-floods=N, ...), the system calls so far and, over
// the interval, the messages each carried (udp=reads:R,writes:W,
// msgs/read:X,msgs/write:Y); then shards=, the messages each shard has
// sent.
func report(ctx context.Context, interval time.Duration, m *nm.Manager, out io.Writer) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	begin := time.Now()
	var last nm.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var recv, sent, reads, writes int64
		st := m.Stats()
		var calls strings.Builder
		for t := nm.UDP; t <= nm.HTTP; t++ {
			c := st.Of(t)
			recv += c.Received
			sent += c.Sent
			reads += c.Reads
			writes += c.Writes
			for _, r := range []struct {
				name string
				n    int64
			}{
				{"dropped", c.Dropped}, {"shed", c.Shed}, {"refused", c.Refused}, {"expired", c.Expired},
				{"floods", c.Floods}, {"toolarge", c.TooLarge}, {"outputfull", c.OutputFull},
				{"writetimeouts", c.WriteTimeouts}, {"panics", c.Panics},
			} {
				if r.n > 0 {
					fmt.Fprintf(&calls, " %s-%s=%d", t, r.name, r.n)
				}
			}
			if c.Reads+c.Writes > 0 {
				p := last.Of(t)
				fmt.Fprintf(&calls, " %s=reads:%d,writes:%d,msgs/read:%.1f,msgs/write:%.1f", t, c.Reads, c.Writes,
					perCall(c.Received-p.Received, c.Reads-p.Reads), perCall(c.Sent-p.Sent, c.Writes-p.Writes))
			}
		}
		last = st
		var shards []string
		for i := 0; i < m.Workers(); i++ {
			var n int64
			for t := nm.UDP; t <= nm.HTTP; t++ {
				n += m.ShardStats(i).Of(t).Sent
			}
			shards = append(shards, strconv.FormatInt(n, 10))
		}
		fmt.Fprintf(out, "nmecho: report t=%.0fs goroutines=%d heap=%dKiB received=%d sent=%d reads=%d writes=%d%s shards=%s\n",
			time.Since(begin).Seconds(), runtime.NumGoroutine(), ms.HeapInuse>>10, recv, sent, reads, writes, calls.String(), strings.Join(shards, ","))
	}
}

// perCall returns messages per system call, 0 without calls.
func perCall(msgs, calls int64) float64 {
	if calls == 0 {
		return 0
	}
	return float64(msgs) / float64(calls)
}
