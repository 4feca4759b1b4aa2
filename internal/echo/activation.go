package echo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/rainbowduck/netmgr/nm"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// names are the listeners a passed socket can be named after.
var names = []string{"udp", "tcp", "dot", "doh", "doq", "echo", "tls-echo"}

// Activated returns the sockets passed to this process by socket
// activation (systemd's LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, see
// sd_listen_fds(3)), by listener name, and unsets those variables so that
// child processes do not take them. A socket named after a listener
// ("udp", "tcp", "dot", "doh", "doq", "echo", "tls-echo"; FileDescriptorName= in
// the socket unit) serves that listener; any other serves "udp" if it is a
// datagram socket and "tcp" if it is a listening stream socket. It returns
// nil when no sockets were passed to this process.
func Activated() (map[string]nm.SocketConfig, error) {
	pid, fds, fdNames := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	return activated(pid, fds, fdNames, os.Getpid(), os.NewFile)
}

// activated parses socket activation's variables for process self, with
// file opening descriptor fd.
func activated(pid, fds, fdNames string, self int, file func(fd uintptr, name string) *os.File) (map[string]nm.SocketConfig, error) {
	if fds == "" || pid != strconv.Itoa(self) {
		return nil, nil // none, or meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("nmecho: LISTEN_FDS=%q is not a count", fds)
	}
	nameOf := strings.Split(fdNames, ":")
	socks := make(map[string]nm.SocketConfig)
	for i := 0; i < n; i++ {
		name := ""
		if i < len(nameOf) {
			name = nameOf[i]
		}
		f := file(uintptr(listenFDsStart+i), name)
		err := add(socks, f, name)
		f.Close() // the net values hold their own descriptors
		if err != nil {
			closeSockets(socks)
			for j := i + 1; j < n; j++ {
				if f := file(uintptr(listenFDsStart+j), ""); f != nil {
					f.Close()
				}
			}
			return nil, fmt.Errorf("nmecho: passed socket %d (%q): %w", listenFDsStart+i, name, err)
		}
	}
	return socks, nil
}

// add files the socket f, named name, under its listener in socks.
func add(socks map[string]nm.SocketConfig, f *os.File, name string) error {
	if f == nil {
		return errors.New("not a descriptor")
	}
	known := false
	for _, n := range names {
		known = known || n == name
	}
	if ln, err := net.FileListener(f); err == nil {
		if name == "udp" {
			ln.Close()
			return errors.New("a stream socket cannot serve udp")
		}
		if !known {
			name = "tcp"
		}
		sc := socks[name]
		sc.Listeners = append(sc.Listeners, ln)
		socks[name] = sc
		return nil
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return errors.New("neither a listening stream socket nor a datagram socket")
	}
	if _, ok := pc.(*net.UDPConn); !ok || (known && name != "udp") {
		pc.Close()
		return errors.New("a datagram socket serves only udp")
	}
	sc := socks["udp"]
	sc.PacketConns = append(sc.PacketConns, pc)
	socks["udp"] = sc
	return nil
}

func closeSockets(socks map[string]nm.SocketConfig) {
	for _, sc := range socks {
		for _, pc := range sc.PacketConns {
			pc.Close()
		}
		for _, ln := range sc.Listeners {
			ln.Close()
		}
	}
}
