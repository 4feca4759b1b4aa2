package echo

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rainbowduck/netmgr/nm/nmprom"
)

// startMetrics serves the manager's statistics for Prometheus on
// http://addr/metrics, until the server closes.
func (s *Server) startMetrics(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(nmprom.NewCollector(s.m, nmprom.Options{PerShard: true}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	s.addrs["metrics"] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.wg.Go(func() {
		if err := s.metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("nmecho: metrics", "err", err)
		}
	})
	return nil
}

// stopMetrics closes the metrics server, if it runs.
func (s *Server) stopMetrics() {
	if s.metrics != nil {
		s.metrics.Close()
	}
}
