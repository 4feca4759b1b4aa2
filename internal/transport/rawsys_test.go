package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		acc <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

// TestRawIOBehavesAsTCPConn: reads and writes made with raw system calls
// give what net.TCPConn's give: the bytes, io.EOF at the peer's close, a
// deadline error, net.ErrClosed, and a connection reset.
func TestRawIOBehavesAsTCPConn(t *testing.T) {
	a, b := tcpPair(t)
	var ra, rb RawIO
	if err := ra.Init(a); err != nil {
		t.Fatal(err)
	}
	if err := rb.Init(b); err != nil {
		t.Fatal(err)
	}
	// A write larger than the socket buffers waits for the reader and is
	// whole when it returns.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	wrote := make(chan error, 1)
	go func() {
		n, err := ra.Write(big)
		if err == nil && n != len(big) {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	got := make([]byte, 0, len(big))
	buf := make([]byte, 32<<10)
	for len(got) < len(big) {
		n, err := rb.Read(buf)
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("Write = %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the bytes read are not those written")
	}

	// A read deadline ends a read with os.ErrDeadlineExceeded, a timeout.
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := rb.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline = %v; want a timeout matching os.ErrDeadlineExceeded", err)
	}
	b.SetReadDeadline(time.Time{})

	// The peer's close is io.EOF.
	a.CloseWrite()
	if _, err := rb.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer's FIN = %v; want io.EOF", err)
	}
	// A peer that is gone resets: writes fail with ECONNRESET or EPIPE.
	a.SetLinger(0)
	a.Close()
	var werr error
	for range 100 { // the first write can go out before the RST is seen
		if _, werr = rb.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(time.Millisecond) // polling: nothing signals the RST's arrival
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("Write to a reset connection = %v; want ECONNRESET or EPIPE", werr)
	}
	// A closed socket is net.ErrClosed, on both directions.
	b.Close()
	if _, err := rb.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed socket = %v; want net.ErrClosed", err)
	}
	if _, err := rb.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed socket = %v; want net.ErrClosed", err)
	}
	// Reading nothing is no call at all.
	if n, err := rb.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

// TestRawIOCloseWakesRead: closing the socket ends a read that waits, as
// with net.TCPConn.
func TestRawIOCloseWakesRead(t *testing.T) {
	_, b := tcpPair(t)
	var rb RawIO
	if err := rb.Init(b); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := rb.Read(make([]byte, 16))
		done <- err
	}()
	b.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read when the socket closed = %v; want net.ErrClosed", err)
	}
}
