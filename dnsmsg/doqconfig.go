package dnsmsg

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rainbowduck/netmgr/nm"
)

// ALPNDoQ is the TLS application protocol of DNS over QUIC (RFC 9250).
const ALPNDoQ = "doq"

// DoQ application error codes (RFC 9250 4.3), for streams and connections.
const (
	DoQNoError          quic.ApplicationErrorCode = 0x0 // DOQ_NO_ERROR
	DoQInternalError    quic.ApplicationErrorCode = 0x1 // DOQ_INTERNAL_ERROR
	DoQProtocolError    quic.ApplicationErrorCode = 0x2 // DOQ_PROTOCOL_ERROR
	DoQRequestCancelled quic.ApplicationErrorCode = 0x3 // DOQ_REQUEST_CANCELLED
	DoQExcessiveLoad    quic.ApplicationErrorCode = 0x4 // DOQ_EXCESSIVE_LOAD
)

// Defaults of QUICConfig.
const (
	DefaultQUICStreams       = 100
	DefaultQUICConns         = 10000
	DefaultQUICConnsPerAddr  = 64
	DefaultQUICIdleTimeout   = 30 * time.Second
	DefaultQUICStreamTimeout = 5 * time.Second
	DefaultQUICWriteTimeout  = 5 * time.Second
)

// QUICConfig configures a DNS over QUIC listener (ServerConfig.QUIC). The
// zero value is ready to use. For every timeout, zero means the default
// and nm.NoTimeout none.
type QUICConfig struct {
	// MaxStreams bounds the queries in flight on one connection: the
	// streams the client may have open, through QUIC's stream credit,
	// which a stream gives back only once its request handle is released
	// (or the client cancels it). If zero, DefaultQUICStreams (100).
	MaxStreams int
	// MaxConns bounds the connections of the listener. A connection over
	// it is ended with DOQ_EXCESSIVE_LOAD after its handshake (counted
	// Refused); past MaxConns+max(MaxConns/8, 16) new ones are refused
	// before any handshake work (QUIC CONNECTION_REFUSED). If zero,
	// DefaultQUICConns.
	MaxConns int
	// MaxConnsPerAddr bounds the connections from one client IP address,
	// ended with DOQ_EXCESSIVE_LOAD over it (counted Refused). If zero,
	// DefaultQUICConnsPerAddr.
	MaxConnsPerAddr int
	// RetryAbove switches address validation (QUIC Retry) on while the
	// listener has at least that many connections, so that a flood of
	// spoofed handshakes costs a stateless packet each. If zero,
	// MaxConns/2; if negative, always.
	RetryAbove int
	// IdleTimeout ends a connection with no traffic (QUIC max_idle_timeout).
	// If zero, DefaultQUICIdleTimeout; nm.NoTimeout: 24 hours, QUIC's
	// idle timeout cannot be switched off.
	IdleTimeout time.Duration
	// StreamTimeout bounds the time from a stream's opening to its whole
	// query and FIN: a stream that sends one byte and stalls is reset
	// (DOQ_REQUEST_CANCELLED) at it. If zero, DefaultQUICStreamTimeout.
	StreamTimeout time.Duration
	// WriteTimeout bounds how long a reply may wait for the client's flow
	// control credit; past it the stream is reset (counted WriteTimeouts).
	// Send never waits for it. If zero, DefaultQUICWriteTimeout.
	WriteTimeout time.Duration
	// Allow0RTT accepts 0-RTT data from resumed clients (an early
	// listener): queries in it are delivered before the handshake
	// completes, QUERY and NOTIFY only; others wait for the handshake.
	Allow0RTT bool
	// NoPadding switches off the EDNS(0) padding of replies (RFC 8467
	// block padding to 468 bytes, applied to replies with an OPT record).
	NoPadding bool
}

func (c *QUICConfig) maxStreams() int { return orDefault(c.MaxStreams, DefaultQUICStreams) }
func (c *QUICConfig) maxConns() int   { return orDefault(c.MaxConns, DefaultQUICConns) }
func (c *QUICConfig) maxConnsPerAddr() int {
	return orDefault(c.MaxConnsPerAddr, DefaultQUICConnsPerAddr)
}

func (c *QUICConfig) retryAbove() int {
	switch {
	case c.RetryAbove < 0:
		return 0
	case c.RetryAbove == 0:
		return c.maxConns() / 2
	}
	return c.RetryAbove
}

func (c *QUICConfig) idleTimeout() time.Duration {
	if c.IdleTimeout < 0 {
		return 24 * time.Hour
	}
	return timeoutOr(c.IdleTimeout, DefaultQUICIdleTimeout)
}

func (c *QUICConfig) streamTimeout() time.Duration {
	return timeoutOr(c.StreamTimeout, DefaultQUICStreamTimeout)
}

func (c *QUICConfig) writeTimeout() time.Duration {
	return timeoutOr(c.WriteTimeout, DefaultQUICWriteTimeout)
}

// quic returns the quic-go configuration of a listener.
func (c *QUICConfig) quic() *quic.Config {
	streams := int64(c.maxStreams())
	return &quic.Config{
		MaxIdleTimeout:             c.idleTimeout(),
		MaxIncomingStreams:         streams,
		MaxIncomingUniStreams:      1, // to see one and end the connection (RFC 9250 4.2)
		RequireStreamCreditRelease: true,
		// A stream carries one query: its window is one message.
		InitialStreamReceiveWindow:     2 + MaxSize,
		MaxStreamReceiveWindow:         2 + MaxSize,
		InitialConnectionReceiveWindow: uint64(min(streams, 16)) * (2 + MaxSize),
		MaxConnectionReceiveWindow:     uint64(streams) * (2 + MaxSize),
		Allow0RTT:                      c.Allow0RTT,
	}
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// timeoutOr resolves a timeout setting: zero is def, negative none (0).
func timeoutOr(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0 || d == nm.NoTimeout:
		return 0
	}
	return d
}
