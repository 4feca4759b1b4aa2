package stream

import "sync"

// Read buffers come in size classes. A connection reads into the smallest
// class first and moves up when a read fills its buffer, so an idle or
// query-sized connection never holds a large buffer.
var bufClasses = [...]int{512, 4 << 10, 16 << 10, 64 << 10}

var bufPools [len(bufClasses)]sync.Pool

func init() {
	for i, size := range bufClasses {
		bufPools[i].New = func() any {
			b := make([]byte, size)
			return &b
		}
	}
}

// getBuf returns a buffer of class i.
func getBuf(i int) *[]byte { return bufPools[i].Get().(*[]byte) }

// putBuf returns a buffer to its class.
func putBuf(b *[]byte) {
	for i, size := range bufClasses {
		if cap(*b) == size {
			*b = (*b)[:size]
			bufPools[i].Put(b)
			return
		}
	}
}
