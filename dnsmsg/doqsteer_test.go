package dnsmsg

import (
	"testing"

	"golang.org/x/net/bpf"
)

// The steering program sends packets carrying our connection IDs to
// their shard's socket, and everything else to the kernel's hash.
func TestDoQSteerProgram(t *testing.T) {
	vm, err := bpf.NewVM(doqSteerProgram(4))
	if err != nil {
		t.Fatal(err)
	}
	const hash = -1
	long := func(first byte, version uint32, cid ...byte) []byte {
		b := []byte{first, byte(version >> 24), byte(version >> 16), byte(version >> 8), byte(version), byte(len(cid))}
		return append(append(b, cid...), 0, 0, 0, 0)
	}
	ours := []byte{2, 9, 9, 9, 9, 9, 9, 9}
	tests := []struct {
		name string
		pkt  []byte
		want int
	}{
		{"short header", append([]byte{0x40}, ours...), 2},
		{"short header, shard 3", []byte{0x41, 3, 1, 2, 3, 4, 5, 6, 7, 8}, 3},
		{"short header, unknown shard", []byte{0x40, 7, 1, 2, 3, 4, 5, 6, 7}, hash},
		{"Handshake", long(0xe0, 1, ours...), 2},
		{"Handshake, another ID length", long(0xe0, 1, 2, 9, 9, 9), hash},
		{"Initial", long(0xc0, 1, ours...), hash},
		{"0-RTT", long(0xd0, 1, ours...), hash},
		{"QUIC v2", long(0xe0, 0x6b3343cf, ours...), hash},
	}
	for _, tt := range tests {
		got, err := vm.Run(tt.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if tt.want == hash && got != 0xffffffff || tt.want != hash && got != tt.want {
			t.Errorf("%s: program returned %#x; want %d", tt.name, got, tt.want)
		}
	}
}

// Connection IDs carry their shard in the first byte, and differ.
func TestShardCIDs(t *testing.T) {
	g := shardCIDs{shard: 3}
	a, _ := g.GenerateConnectionID()
	b, _ := g.GenerateConnectionID()
	if a.Len() != doqCIDLen || a.Bytes()[0] != 3 || a == b {
		t.Errorf("IDs %v, %v; want %d bytes, first 3, different", a, b, doqCIDLen)
	}
}
