package dnsmsg

import (
	"crypto/rand"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/bpf"
)

// doqCIDLen is the length of the connection IDs a sharded DoQ listener
// gives out: the first byte is the shard's number, the other 7 random.
const doqCIDLen = 8

// shardCIDs makes the connection IDs of one shard's QUIC transport, so
// that the steering program can send each packet to the socket of the
// shard that owns its connection. The shard's number is visible to an
// observer, as with QUIC-LB's plaintext algorithm; the rest is random.
type shardCIDs struct{ shard byte }

// GenerateConnectionID implements quic.ConnectionIDGenerator.
func (g shardCIDs) GenerateConnectionID() (quic.ConnectionID, error) {
	var b [doqCIDLen]byte
	b[0] = g.shard
	if _, err := rand.Read(b[1:]); err != nil {
		return quic.ConnectionID{}, err
	}
	return quic.ConnectionIDFromBytes(b[:]), nil
}

// ConnectionIDLen implements quic.ConnectionIDGenerator.
func (g shardCIDs) ConnectionIDLen() int { return doqCIDLen }

// doqSteerProgram returns the classic BPF program that picks, among the n
// sockets of a SO_REUSEPORT group, the one for a QUIC packet (the program
// sees the UDP payload): for a short-header packet, and for a QUIC v1
// Handshake packet carrying one of our connection IDs, the socket whose
// number is the ID's first byte; for anything else (Initial and 0-RTT
// packets, whose IDs the client chose, or an unknown shard) a value out of
// range, on which the kernel falls back to its hash of the addresses. So
// a client whose address changes keeps reaching its connection's shard.
func doqSteerProgram(n int) []bpf.Instruction {
	const hash = 0xffffffff
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 0, Size: 1},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x80, SkipFalse: 8}, // short header: 10
		/* 2 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x30},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x20, SkipFalse: 9}, // not Handshake: 13
		/* 4 */ bpf.LoadAbsolute{Off: 1, Size: 4},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipFalse: 7}, // not QUIC v1: 13
		/* 6 */ bpf.LoadAbsolute{Off: 5, Size: 1},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: doqCIDLen, SkipFalse: 5}, // not our ID: 13
		/* 8 */ bpf.LoadAbsolute{Off: 6, Size: 1},
		/* 9 */ bpf.Jump{Skip: 1},
		/* 10 */ bpf.LoadAbsolute{Off: 1, Size: 1},
		/* 11 */ bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: uint32(n), SkipTrue: 1},
		/* 12 */ bpf.RetA{},
		/* 13 */ bpf.RetConstant{Val: hash},
	}
}
