package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestSocketActivation runs nmecho as systemd would: with a UDP socket and
// a TCP listener passed as descriptors 3 and 4, LISTEN_FDS, LISTEN_FDNAMES
// and LISTEN_PID set to its own pid (by a shell that execs it). It must
// serve them and nothing else.
func TestSocketActivation(t *testing.T) {
	bin := build(t)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f1, _ := pc.File()
	f2, _ := ln.File()
	defer f1.Close()
	defer f2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "-workers", "2")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=udp:tcp")
	cmd.ExtraFiles = []*os.File{f1, f2}
	_, addrs := startCmd(t, cmd)
	if len(addrs) != 2 || addrs["udp"] != pc.LocalAddr().String() || addrs["tcp"] != ln.Addr().String() {
		t.Errorf("nmecho listens on %v; want only udp %v and tcp %v", addrs, pc.LocalAddr(), ln.Addr())
	}
	// Only the child may answer now.
	pc.Close()
	ln.Close()
	for _, n := range []string{"udp", "tcp"} {
		q := new(dns.Msg)
		q.SetQuestion("activated.example.", dns.TypeA)
		c := &dns.Client{Net: n, Timeout: 10 * time.Second}
		if r, _, err := c.Exchange(q, addrs[n]); err != nil || !r.Response {
			t.Errorf("%s: %v, %v", n, r, err)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}
}
