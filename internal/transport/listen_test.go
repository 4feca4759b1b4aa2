package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// holdEnv, set to "udp" or "tcp", turns the test binary into a process
// that binds 127.0.0.1:0 with three shards, prints the address, and holds
// it until its standard input closes (see TestMain).
const holdEnv = "NMTEST_HOLD"

// hold is the child of TestListenRefusesPortOfOtherProcess.
func hold(proto string) int {
	closer, addr, err := listenN(proto, "127.0.0.1:0", 3, ListenConfig{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(addr)
	io.Copy(io.Discard, os.Stdin)
	closer()
	return 0
}

// listenN binds n sockets of proto and returns a function closing them
// and their address.
func listenN(proto, addr string, n int, lc ListenConfig) (func(), string, error) {
	if proto == "udp" {
		cs, err := ListenUDP(context.Background(), addr, n, lc)
		if err != nil {
			return nil, "", err
		}
		return func() { closeAll(cs) }, cs[0].LocalAddr().String(), nil
	}
	ls, err := ListenTCP(context.Background(), addr, n, lc)
	if err != nil {
		return nil, "", err
	}
	return func() {
		for _, l := range ls {
			l.Close()
		}
	}, ls[0].Addr().String(), nil
}

func TestListenRefusesPortInUse(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		for _, first := range []int{1, 3} {
			closeFirst, addr, err := listenN(proto, "127.0.0.1:0", first, ListenConfig{})
			if err != nil {
				t.Fatal(err)
			}
			closeSecond, _, err := listenN(proto, addr, 3, ListenConfig{})
			if err == nil {
				closeSecond()
				t.Errorf("%s: second listener on %s (first has %d sockets) bound; want EADDRINUSE", proto, addr, first)
			} else if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("%s: second listener: %v; want EADDRINUSE", proto, err)
			}
			// The refusal left the first listener intact.
			closeFirst()
			if c, _, err := listenN(proto, addr, 3, ListenConfig{}); err != nil {
				t.Errorf("%s: %s not free after its listener closed: %v", proto, addr, err)
			} else {
				c()
			}
		}
	}
}

func TestListenSharePort(t *testing.T) {
	if !ReusePortSupported {
		t.Skip("no SO_REUSEPORT balancing on this platform")
	}
	share := ListenConfig{SharePort: true}
	for _, proto := range []string{"udp", "tcp"} {
		closeFirst, addr, err := listenN(proto, "127.0.0.1:0", 2, share)
		if err != nil {
			t.Fatal(err)
		}
		closeSecond, _, err := listenN(proto, addr, 2, share)
		if err != nil {
			t.Errorf("%s: second listener with SharePort: %v", proto, err)
		} else {
			closeSecond()
		}
		closeFirst()
	}
}

func TestListenRefusesPortOfOtherProcess(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), holdEnv+"="+proto)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			stdin.Close()
			cmd.Wait()
			t.Fatalf("%s: child gave no address: %v", proto, err)
		}
		addr := strings.TrimSpace(line)
		closer, _, err := listenN(proto, addr, 3, ListenConfig{})
		if err == nil {
			closer()
			t.Errorf("%s: bound %s while another process holds it; want EADDRINUSE", proto, addr)
		} else if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("%s: %v; want EADDRINUSE", proto, err)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("%s: child: %v", proto, err)
		}
	}
}

func TestNetworkOf(t *testing.T) {
	for _, tc := range []struct{ addr, family, want string }{
		{"0.0.0.0:53", "", "udp4"},
		{"127.0.0.1:53", "", "udp4"},
		{"[::]:53", "", "udp"},
		{":53", "", "udp"},
		{"localhost:53", "", "udp"},
		{"[::]:53", "ip6", "udp6"},
		{":53", "ip4", "udp4"},
	} {
		if got, err := networkOf("udp", tc.addr, tc.family); got != tc.want || err != nil {
			t.Errorf("networkOf(udp, %q, %q) = %q, %v; want %q", tc.addr, tc.family, got, err, tc.want)
		}
	}
	if _, err := networkOf("udp", ":53", "ipx"); err == nil {
		t.Error("networkOf accepted family ipx")
	}
}

// TestListenControl checks that the Control hook runs on every socket
// (the probe's too) and that its error fails the listen.
func TestListenControl(t *testing.T) {
	var calls atomic.Int32
	lc := ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		calls.Add(1)
		return nil
	}}
	closer, _, err := listenN("udp", "127.0.0.1:0", 2, lc)
	if err != nil {
		t.Fatal(err)
	}
	closer()
	want := int32(3) // the probe and two shards
	if !ReusePortSupported {
		want = 2
	}
	if n := calls.Load(); n != want {
		t.Errorf("Control called %d times; want %d", n, want)
	}
	refuse := errors.New("refused by the hook")
	lc.Control = func(string, string, syscall.RawConn) error { return refuse }
	if _, _, err := listenN("tcp", "127.0.0.1:0", 2, lc); !errors.Is(err, refuse) {
		t.Errorf("listen with a failing Control: %v; want its error", err)
	}
}

// TestListenV6OnlyLeavesIPv4Free checks that Family ip6 on [::] takes no
// IPv4: a listener on 0.0.0.0 binds the same port beside it.
func TestListenV6OnlyLeavesIPv4Free(t *testing.T) {
	for _, proto := range []string{"udp", "tcp"} {
		close6, addr, err := listenN(proto, "[::]:0", 2, ListenConfig{Family: "ip6"})
		if err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("no IPv6: %v", err)
			}
			t.Fatal(err)
		}
		_, port, _ := strings.Cut(addr, "]:")
		close4, _, err := listenN(proto, "0.0.0.0:"+port, 2, ListenConfig{})
		if err != nil {
			t.Errorf("%s: 0.0.0.0:%s beside a v6-only [::]: %v", proto, port, err)
		} else {
			close4()
		}
		close6()
	}
}

// TestListenDualStackHoldsIPv4 checks the default of "[::]": both
// families, so 0.0.0.0 on its port is refused.
func TestListenDualStackHoldsIPv4(t *testing.T) {
	closer, addr, err := listenN("udp", "[::]:0", 2, ListenConfig{})
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("no IPv6: %v", err)
		}
		t.Fatal(err)
	}
	defer closer()
	_, port, _ := strings.Cut(addr, "]:")
	if c, _, err := listenN("udp", "0.0.0.0:"+port, 1, ListenConfig{}); !errors.Is(err, syscall.EADDRINUSE) {
		if err == nil {
			c()
		}
		t.Errorf("0.0.0.0:%s beside a dual-stack [::]: %v; want EADDRINUSE", port, err)
	}
}
