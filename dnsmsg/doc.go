// Package dnsmsg serves and sends DNS messages over the transports of
// netmgr with one programming model: every data event carries exactly one
// complete DNS message in wire format, whatever the transport.
//
// # Servers
//
// ListenUDP, ListenTCP and ListenTLS (DNS over TLS, ALPN "dot") return a
// Listener that delivers requests on the channel returned by Requests:
// each event holds one message and a handle to reply on, then, when the
// listener is closed, one final event, then the channel is closed. Requests
// from every connection of a TCP or TLS listener share that one channel,
// so one loop serves every transport. The receiver owns one reference to
// each request's handle and must Detach it when done, usually right after
// sending the reply:
//
//	l, _ := dnsmsg.ListenTCP(ctx, mgr, "127.0.0.1:5300", dnsmsg.ServerConfig{})
//	for ev := range l.Requests() {
//		if ev.Err != nil {
//			break // the final event
//		}
//		reply := answer(ev.Data)
//		ev.Handle.Send(reply) // framed with its length on TCP and TLS
//		ev.Handle.Detach()
//	}
//
// Over TCP and TLS each message is preceded by its length as 2 bytes,
// big-endian (RFC 1035 4.2.2, RFC 7766). Replies may go out in any order
// (pipelining); ServerConfig.Ordered answers one request of a connection at
// a time. A request's Data stays valid until its handle is detached.
// Closing a request's handle closes its connection; SetKeepalive on it
// switches the connection's idle timeout to the keepalive timeout (EDNS
// tcp-keepalive, RFC 7828), whose value KeepaliveTimeout gives for the
// reply's option.
//
// Messages that cannot be DNS requests (shorter than a header, the QR bit
// set, section counts that cannot fit) are dropped and counted, never
// delivered.
//
// # Handlers
//
// Serve runs a bounded pool of workers over a listener's channel and calls
// a Handler for each request, for the common case; the channel stays for
// those who want it:
//
//	go dnsmsg.Serve(ctx, l.Requests(), dnsmsg.HandlerFunc(func(r *dnsmsg.Request) {
//		q, err := r.Msg() // parsed on first use
//		if err != nil {
//			return // Serve answers FORMERR
//		}
//		r.Reply(answer(q)) // truncated to the client's size over UDP
//	}), dnsmsg.ServeConfig{})
//
// A Request carries the message (Wire, or Msg parsed lazily), the
// addresses, the transport and a Context that ends when the handler
// returns, when its conversation ends or when Serve's context ends. A
// handler that panics is recovered, logged and counted, and its request
// answered SERVFAIL. A Request is not recycled: after the handler returns,
// Msg, Reply and ReplyWire return nm.ErrReleased and Wire panics. Over TCP
// and TLS a request may take several replies (a zone transfer).
// MiekgHandler serves an existing github.com/miekg/dns Handler (a
// dns.ServeMux) on every transport, DNS over HTTPS included.
//
// # Drain
//
// Shutdown(ctx) on a listener, or on the manager for all of them, drains
// as http.Server.Shutdown does: the listener stops taking requests (UDP
// stops reading; TCP and TLS stop accepting connections and reading
// requests), the requests already delivered are answered until ctx ends,
// each stream connection ends with a FIN after its last reply, then the
// listener closes. Close is the abort. A deploy loses no answer in
// progress.
//
// # DNS over HTTPS
//
// ListenHTTPS serves DNS over HTTPS (RFC 8484) over HTTP/2 with TLS (ALPN
// "h2"; HTTP/1.1 too with HTTPConfig.HTTP1), ListenHTTP over cleartext
// HTTP/2 (prior knowledge). A DoH listener counts its connections, TLS
// handshakes included, and its requests under nm.HTTP. HTTP/2 is served by a connection loop of this
// package over golang.org/x/net/http2's Framer and HPACK codec: a request
// costs no http.Request and no goroutine, the connection's reader
// delivers it, the reply is framed by the goroutine that sends it and
// written by the connection's writer goroutine. HTTP/1.1 is served by
// net/http, whose handler goroutine writes the reply. Each
// endpoint path of an Endpoints set delivers its requests on a channel of
// its own, with the same events as above: one DNS message per receive,
// whether it came as a POST body (application/dns-message) or a GET dns
// parameter (base64url, no padding), and a handle whose Send writes the
// reply (application/dns-message, Cache-Control max-age from the answer's
// smallest TTL, or no-cache) and ends the stream; a second Send fails with
// nm.ErrClosed. Send never waits for the peer: it queues the reply (a
// copy: b may be reused at once) and returns; whether it was written is
// reported only to SendAsync's done channel, from the connection's writer
// (HTTP/2) or the request's handler (HTTP/1.1), never on the caller's
// stack. A request released without a reply has its stream reset.
// HTTPListener.SetEndpoints replaces the set while the listener runs; the
// old set's channels get their final event.
//
//	l, _ := dnsmsg.ListenHTTPS(ctx, mgr, "127.0.0.1:8443", tlsConf, nil, dnsmsg.HTTPConfig{})
//	for ev := range l.Endpoints().Requests(dnsmsg.DefaultPath) { ... } // as above
//
// A request the server refuses gets an HTTP error status and the
// connection goes on: 400 (no or bad dns parameter, not a DNS query), 404
// (unknown path), 405 with Allow (methods other than GET and POST), 408
// (a body that does not come within the initial timeout), 413 (a body or
// decoded query over 65535 bytes), 414 (a URI over HTTPConfig.MaxURI), 415
// (a POST of another content type), 431 (headers over
// HTTPConfig.MaxHeaderBytes).
//
// # DNS over QUIC
//
// ListenQUIC serves DNS over QUIC (RFC 9250, ALPN "doq") on
// github.com/quic-go/quic-go, with a QUIC transport per shard over
// SO_REUSEPORT sockets; DialQUIC is its client. Each query is a
// client-initiated bidirectional stream carrying one message with its
// 2-byte length prefix and a FIN; the reply goes back on the same stream
// with its FIN, in any order across streams. Requests arrive on Requests
// like every other transport's (Request.Transport is nm.QUIC), with
// message ID 0 as the client sent it; the reply keeps ID 0 (the server
// forces it). DialQUIC's Conn sends each query on a stream of its own
// with ID 0 on the wire and gives the reply the query's ID back; a stream
// the server resets yields a *RequestError for that query.
//
// RFC 9250's rules end the connection with DOQ_PROTOCOL_ERROR (counted
// Dropped): a message ID other than 0, a second message or a FIN before
// the message on a stream, a zero length, a response, an edns-tcp-keepalive
// option, a unidirectional stream. A request released without a reply, or
// Closed, resets its stream with DOQ_INTERNAL_ERROR, not the connection.
// A client that cancels its stream (STOP_SENDING, DOQ_REQUEST_CANCELLED)
// ends the request's Context and gives its place back at once; its Send
// then fails with nm.ErrConnReset. One Send per request: a second fails.
//
// Send never waits: the reply is queued in the stream at once when the
// client's flow control allows, else written by a goroutine of its own
// within QUICConfig.WriteTimeout, past which the stream is reset (counted
// WriteTimeouts). Replies with an OPT record are padded to a multiple of
// 468 bytes (RFC 8467 block padding), unless QUICConfig.NoPadding.
//
// Limits are in QUICConfig: queries in flight per connection through
// QUIC's stream credit (a stream's credit goes back when its request is
// released, with RequireStreamCreditRelease), connections per listener
// and per client address (over them: DOQ_EXCESSIVE_LOAD, counted Refused;
// far over: refused before the handshake), Retry (address validation)
// above RetryAbove connections, an idle timeout, and a stream timeout
// that resets a stream whose query does not come whole in time; a request
// left unanswered past ServerConfig.RequestTimeout (10 s) has its stream
// reset with DOQ_INTERNAL_ERROR and gives its place back (counted
// Expired; a late Send fails with nm.ErrTimedOut). Stream
// buffers grow with the bytes received, never with the length announced.
// When the request channel is full a query is answered REFUSED (counted
// Shed): a QUIC client is never pushed back through its whole connection.
// With QUICConfig.Allow0RTT the listener takes 0-RTT data; only QUERY and
// NOTIFY messages are delivered before the handshake completes, others
// wait for it. Shutdown stops taking connections and streams, lets the
// streams taken be answered, then closes each connection with
// DOQ_NO_ERROR.
//
// The PROXY protocol is not defined for QUIC: ServerConfig.Proxy does not
// apply to DoQ listeners.
//
// A connection belongs to the shard whose socket received its first
// packet (the kernel's hash of the addresses). On Linux its connection IDs
// carry the shard's number, and a classic BPF program attached to the
// SO_REUSEPORT group (SO_ATTACH_REUSEPORT_CBPF) steers short-header and
// Handshake packets to the socket of the shard that owns the ID, falling
// back to the kernel's hash for Initial and 0-RTT packets; so a client
// whose address changes (NAT rebinding, migration) keeps its connection.
// Elsewhere, with more than one shard, such a client may lose it.
//
// # Clients
//
// A Client is what most programs want: safe for concurrent use by any
// number of goroutines, as http.Client is. Its calls name the upstream by
// URI ("udp://192.0.2.1", "tcp://…:53", "tls://dns.example" for DoT,
// "https://dns.example/dns-query" for DoH):
//
//	c := dnsmsg.NewClient(mgr, dnsmsg.ClientConfig{})
//	defer c.Close()
//	r, err := c.Exchange(ctx, "tls://192.0.2.1:853", q) // r.Id == q.Id
//
// Per stream or DoH upstream it keeps a pool of connections
// (ClientConfig.MaxConns, 2), each carrying up to MaxInFlight (100)
// queries at once. Queries go out under wire IDs the Client picks, unique
// among those in flight on the connection, and each reply reaches only
// the caller whose query it answers (same ID and question), with the
// caller's ID; a reply nobody waits for (late, duplicated, wrong ID or
// question) is dropped and counted. Over DoH the wire ID is 0 (RFC 8484)
// and the HTTP/2 stream matches the reply. Over UDP each query has a
// socket of its own (a fresh source port) and a random ID; a truncated
// reply is asked again over TCP. Every wait ends with the caller's
// context or ReadTimeout (5 s): the dial, a place among the queries in
// flight, the write and the reply. A deadline gives nm.ErrTimedOut (which
// matches context.DeadlineExceeded), a cancel nm.ErrCanceled wrapping
// context.Canceled. A broken connection fails its queries with
// nm.ErrEOF or nm.ErrConnReset, the Client sends each once more on a
// fresh connection, and the next query redials. After MaxFailures (5)
// failures in a row an upstream is marked down: calls fail at once with
// ErrUpstreamDown until a backoff (1 s, doubling to 30 s) ends and a
// probe succeeds.
//
// Transfer asks for a reply of many messages (AXFR, IXFR) over a
// connection of its own and returns a channel with one data event per
// message as it arrives, then exactly one final event: nm.ErrEOF when the
// transfer is complete, ErrTransfer, a timeout or ctx's end otherwise.
// Its messages are the receiver's to keep.
//
// Under the Client is the Conn: one socket or connection, driven by hand.
// DialUDP, DialTCP, DialTLS and DialHTTPS return one. Each Read arms one
// read and yields exactly one event: a reply, nm.ErrTimedOut when the
// read timeout passes first (the Conn stays usable: read again, or give
// up), or the final error (nm.ErrEOF when a stream server closes, after
// the replies it sent before; nm.ErrEOF or nm.ErrConnReset when a DoH
// server closes the connection, idle or not; nm.ErrCanceled after Close),
// after which the channel is closed. A reply's Data is valid until the
// next Read. Read once per reply: ranging over the channel receives one
// reply and then waits for a read nobody armed. Over TCP and TLS, queries
// may be pipelined: send many, then read as many replies, matched by ID;
// a reply whose ID matches no query outstanding on the Conn is discarded
// and counted (on UDP: none of the last 64 queries). Exchange sends one
// query and waits for its reply; concurrent Exchange calls take turns
// (each within its context), and must not be mixed with Read. The
// package's Exchange retries a truncated UDP reply over TCP. Over DoH
// each query is an HTTP/2 stream (POST, or GET with
// ClientConfig.HTTPGet); a query the server refuses yields a
// *RequestError, which like a timeout ends only that Read.
//
// # Limits
//
// UDP datagrams longer than ServerConfig.MaxUDPSize (default 4096 bytes) are
// dropped and counted; a listener's queue is bounded and, when full, new
// datagrams are dropped and counted: UDP ingress never waits for a slow
// consumer. Nor does a TCP or TLS connection: when the queue is full, its
// request is answered at once with ServerConfig.Shed (REFUSED by default,
// or SERVFAIL) and its question, counted Shed, and reading goes on.
//
// No Send waits for a peer (see package stream): a reply goes to its
// connection's bounded output, and a peer that does not read fills only
// its own output and is then cut off, so a consumer serving every
// connection from one goroutine is never held by one of them.
//
// The limits of a TCP or TLS listener, next to BIND 9's and CoreDNS's
// (CoreDNS serves TCP with miekg/dns); "-" is no such limit that we know
// of. Each cut-off is counted by reason in nm.Totals.
//
//	limit (field; counter)                  default     BIND 9                  CoreDNS
//	requests in flight per connection       23          23                      1 (answered in turn)
//	  (MaxInFlight)
//	unsent bytes at which a connection      64 KiB      64 KiB                  -
//	  stops reading (Stream.Backpressure)
//	a connection's output                   256 KiB     -                       -
//	  (Stream.MaxOutput; OutputFull)
//	no progress writing to a peer           30 s        -                       write timeout
//	  (Stream.Timeouts.Write; WriteTimeouts)                                    (timeouts plugin)
//	initial / idle timeout                  30 s / 30 s 30 s / 30 s (tcp-       read / idle
//	  (Stream.Timeouts)                                 initial/idle-timeout)   (timeouts plugin)
//	partial message per connection          1           -                       -
//	  (buffer grows with the bytes received)
//	request bytes all connections hold      64 MiB      -                       -
//	  (MaxBuffered; TooLarge)
//	requests queued for the consumers       1024/shard  -                       -
//	  (Queue; past it Shed: REFUSED)
//	connections (Stream.MaxConns; Refused)  none        150 (tcp-clients)       -
//	connections per client, and new ones   none        -                       -
//	  a second (Stream.MaxConnsPerClient,
//	  ClientRate, per /24 or /56; Refused)
//
// At most ServerConfig.MaxInFlight requests of a connection are delivered
// and not yet released; at the bound the connection reads nothing more,
// so one 64 KiB read of tiny queries is taken a few at a time while the
// rest wait unparsed. The initial and idle timeouts (stream.Config) do not
// run while a request is being answered. A zero length prefix ends reading
// on that connection with ErrZeroLength (counted Dropped), a length over
// the largest message accepted with nm.ErrTooLarge (counted TooLarge);
// replies in progress
// still go out. Complete messages are read in place; only the start of a
// message that a read cut off is kept, in a pooled buffer that grows by
// size class with the bytes that arrive, never to the length a prefix
// announces, so a connection costs about what it sent; an idle connection
// holds no buffer. A DNS-over-TCP connection that has sent nothing yet
// holds nothing of this package's or of package stream's: its goroutine
// waits for the first byte (within the initial timeout) before the
// connection's state is made, so a flood of silent connections costs the
// sockets and goroutines plain Go would spend on them.
//
// A DoH connection takes at most HTTPConfig.MaxStreams (100) concurrent
// streams and delivers at most HTTPConfig.MaxInFlight requests not yet
// answered: past it, complete requests wait in the connection, which goes
// on reading frames (a reset frees a place, a WINDOW_UPDATE lets a reply
// go). No connection waits for a consumer: a request whose endpoint's
// channel is full is answered HTTPConfig.ShedStatus (503) at once,
// counted Shed. A request delivered and left unanswered past
// HTTPConfig.RequestTimeout (10 s) gives its place back, counted Expired:
// over HTTP/2 its stream is reset (INTERNAL_ERROR), over HTTP/1.1 it is
// answered 503 and the connection goes on; a late Send fails with
// nm.ErrClosed (and nm.ErrTimedOut) on both. Header blocks are bounded:
// an HPACK string longer than HTTPConfig.MaxHeaderBytes, or a block
// (CONTINUATION frames included) of more than twice it, ends the
// connection. Everything an HTTP/2
// connection queues for its peer (replies, those the flow-control window
// holds back included, statuses, resets, GOAWAY, ACKs, WINDOW_UPDATEs)
// counts toward HTTPConfig.MaxOutput (256 KiB): past it the connection is
// closed, counted Floods when the peer's frames provoked the output
// (reset, 404 or PING floods from a peer that does not read), OutputFull
// when a reply passed it (that Send fails with nm.ErrOutputFull). Streams
// that a client opens and resets at once cost a delivery each, within the
// in-flight bound. A stream reset by the client fails the Send of its
// reply and frees its place. Replies follow HTTP/2 flow control; one the
// peer's window holds back past the write timeout has its stream reset
// (counted WriteTimeouts) and SendAsync's done gets nm.ErrTimedOut. A
// write that passes the write timeout ends the connection (HTTP/1.1 too).
// A response to a request whose client side is still open is followed by
// RST_STREAM(NO_ERROR) (RFC 9113 8.1).
//
// Request bodies take memory as their bytes arrive, in size classes, never
// from a declared content-length; the bytes buffered in bodies not yet
// complete are capped per connection (HTTPConfig.MaxBodyBytes, 256 KiB)
// and per listener (MaxListenerBodyBytes, 32 MiB): past either, 413,
// counted TooLarge.
//
// The initial timeout bounds the time to the first request and each
// request's body (408); the idle timeout the time with no stream open.
// Frames that carry no request (PING, SETTINGS, WINDOW_UPDATE, PRIORITY,
// empty CONTINUATION) extend neither; a connection with no stream open
// may send at most 1000 of them between requests, then it gets
// GOAWAY(ENHANCE_YOUR_CALM), counted Floods. Both timeouts are checked at
// a quarter of the smallest timeout. Each reply is written in TLS records
// of its own: some DoH clients read one record at a time.
package dnsmsg
