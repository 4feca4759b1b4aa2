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
