//go:build !unix

package stream_test

import "syscall"

// smallRcvBuf leaves the receive buffer as it is where the tests do not
// run (they are built there, not run).
func smallRcvBuf(_, _ string, rc syscall.RawConn) error { return nil }
