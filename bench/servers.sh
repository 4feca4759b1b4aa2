# shellcheck shell=bash disable=SC2154 # tmp, ports and launch come from the caller
# Sourced by bench/compare.sh and bench/saturated.sh: builds, configures,
# starts and stops the servers they compare, one at a time, all on
# loopback, each configured as its users run it at load with one worker:
#
#   nmecho     this library's demo server (GOMAXPROCS=1, -workers 1)
#   ref        bench/refserver: github.com/miekg/dns (MaxTCPQueries -1) and
#              net/http for DoH (GOMAXPROCS=1)
#   named      BIND 9, authoritative for one small zone (-n 1)
#   dnsdist    answering every query itself with NOERROR (recvmmsg and
#              sendmmsg by 32, one TCP worker)
#   coredns    CoreDNS with the whoami plugin (GOMAXPROCS=1); $COREDNS, or
#              coredns in $BENCH_CACHE or PATH; skipped if absent
#   reflector  bench/reflector, C recvmmsg/sendmmsg, UDP only
#   quicref    bench/quicref, the same echo the plain quic-go way, a
#              goroutine per stream (GOMAXPROCS=1), DoQ only
#
# DNS over QUIC (doq) is served by nmecho, CoreDNS (quic://) and
# quicref only, and loaded by bench/doqperf, as dnsperf cannot.
#
# The caller sets tmp (a scratch directory), port, dotport and dohport
# (doqport defaults to dohport + 1),
# and the array launch (the command prefix that pins or limits a server);
# servers_setup once, then server_start NAME MODE / server_stop.

BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netmgr-bench}
pid=

# coredns_bin prints the CoreDNS binary to use, or nothing.
coredns_bin() {
	if [[ -n ${COREDNS:-} ]]; then
		echo "$COREDNS"
	elif [[ -x $BENCH_CACHE/coredns ]]; then
		echo "$BENCH_CACHE/coredns"
	else
		command -v coredns || true
	fi
}

# server_missing NAME prints why NAME cannot run here, or nothing.
server_missing() {
	case "$1" in
	named) command -v named >/dev/null || [[ -x /usr/sbin/named ]] || echo "named not installed (apt-get install bind9)" ;;
	dnsdist) command -v dnsdist >/dev/null || echo "dnsdist not installed (apt-get install dnsdist)" ;;
	coredns) [[ -n $(coredns_bin) ]] || echo "CoreDNS not found: set COREDNS, or run" \
		"GOBIN=$BENCH_CACHE go install github.com/coredns/coredns@v1.15.0" ;;
	reflector) command -v cc >/dev/null || echo "no C compiler (apt-get install gcc)" ;;
	esac
}

# server_serves NAME MODE succeeds if NAME has a listener for MODE.
server_serves() {
	case "$2" in
	doq) [[ $1 == nmecho || $1 == coredns || $1 == quicref ]] ;;
	*) [[ $1 != quicref && ($1 != reflector || $2 == udp) ]] ;;
	esac
}

# servers_setup builds the servers and writes their configurations in $tmp.
servers_setup() {
	go build -o "$tmp/nmecho" ./cmd/nmecho
	go build -o "$tmp/refserver" ./bench/refserver
	go build -o "$tmp/doqperf" ./bench/doqperf
	go build -o "$tmp/quicref" ./bench/quicref
	if [[ -z $(server_missing reflector) ]]; then
		cc -O2 -o "$tmp/reflector" bench/reflector/reflector.c
	fi
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
	named_config
	dnsdist_config
	coredns_config
}

# named_config: one small zone answering every query of testdata/queries.txt.
named_config() {
	cat >"$tmp/example.com.zone" <<ZONE
\$TTL 300
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 127.0.0.1
* IN A 192.0.2.1
* IN AAAA 2001:db8::1
* IN MX 10 mail.example.com.
* IN TXT "netmgr benchmark"
ZONE
	cat >"$tmp/named.conf" <<CONF
tls local { cert-file "$tmp/cert.pem"; key-file "$tmp/key.pem"; };
http local { endpoints { "/dns-query"; }; };
options {
	directory "$tmp";
	pid-file none;
	recursion no;
	listen-on port $port { 127.0.0.1; };
	listen-on port $dotport tls local { 127.0.0.1; };
	listen-on port $dohport tls local http local { 127.0.0.1; };
	listen-on-v6 { none; };
	tcp-clients 1000;
};
zone "example.com" { type primary; file "$tmp/example.com.zone"; };
CONF
}

# dnsdist_config: dnsdist answers every query itself (no backend), with no
# security poll; UDP and TCP, DoT and DoH; UDP in batches of up to 32 with
# recvmmsg/sendmmsg (off by default; its users turn it on at load), one TCP
# worker thread, as when it is pinned to one CPU.
dnsdist_config() {
	cat >"$tmp/dnsdist.conf" <<CONF
setSecurityPollSuffix("")
setUDPMultipleMessagesVectorSize(32)
setLocal("127.0.0.1:$port")
addTLSLocal("127.0.0.1:$dotport", "$tmp/cert.pem", "$tmp/key.pem")
addDOHLocal("127.0.0.1:$dohport", "$tmp/cert.pem", "$tmp/key.pem", "/dns-query")
setMaxTCPClientThreads(1)
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
CONF
}

# coredns_config: the whoami plugin on UDP and TCP, DoT (tls://) and DoH
# (https://, path /dns-query), DoQ (quic://), no logging.
coredns_config() {
	cat >"$tmp/Corefile" <<CONF
.:$port {
	bind 127.0.0.1
	whoami
}
tls://.:$dotport {
	bind 127.0.0.1
	tls $tmp/cert.pem $tmp/key.pem
	whoami
}
https://.:$dohport {
	bind 127.0.0.1
	tls $tmp/cert.pem $tmp/key.pem
	whoami
}
quic://.:${doqport:-$((dohport + 1))} {
	bind 127.0.0.1
	tls $tmp/cert.pem $tmp/key.pem
	whoami
}
CONF
}

# server_cmd NAME sets the array cmd to the command line that runs NAME.
server_cmd() {
	local listen=(-udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" -dot "127.0.0.1:$dotport" -doh "127.0.0.1:$dohport")
	case "$1" in
	nmecho) cmd=(env GOMAXPROCS=1 "$tmp/nmecho" -workers 1 -report 500ms "${listen[@]}" -doq "127.0.0.1:${doqport:-$((dohport + 1))}") ;;
	ref) cmd=(env GOMAXPROCS=1 "$tmp/refserver" "${listen[@]}") ;;
	named) cmd=("$(command -v named || echo /usr/sbin/named)" -g -n 1 -c "$tmp/named.conf") ;;
	dnsdist) cmd=(dnsdist --supervised --disable-syslog -C "$tmp/dnsdist.conf") ;;
	coredns) cmd=(env GOMAXPROCS=1 "$(coredns_bin)" -quiet -conf "$tmp/Corefile") ;;
	reflector) cmd=("$tmp/reflector" 127.0.0.1 "$port") ;;
	quicref) cmd=(env GOMAXPROCS=1 "$tmp/quicref" -addr "127.0.0.1:${doqport:-$((dohport + 1))}") ;;
	*) echo "unknown server $1" >&2; return 1 ;;
	esac
}

# server_port MODE prints the port dnsperf loads for MODE.
server_port() {
	case "$1" in
	udp | tcp) echo "$port" ;;
	dot) echo "$dotport" ;;
	doh) echo "$dohport" ;;
	doq) echo "${doqport:-$((dohport + 1))}" ;;
	esac
}

# server_ready MODE succeeds once the server answers a query over MODE.
server_ready() {
	local how=()
	if [[ $1 == doq ]]; then
		"$tmp/doqperf" -s "127.0.0.1:$(server_port doq)" -c 1 -q 1 -d 200ms -t 1s -f testdata/queries.txt 2>/dev/null |
			grep -q 'Queries completed: [1-9]'
		return
	fi
	case "$1" in
	tcp) how=(+tcp) ;;
	dot) how=(+tls) ;;
	doh) how=(+https) ;;
	esac
	dig +short +tries=1 +time=1 "${how[@]}" @127.0.0.1 -p "$(server_port "$1")" ready.example.com >/dev/null 2>&1
}

# server_start NAME MODE starts NAME with the prefix in launch and waits
# (at most 10 s) until it answers over MODE. On failure it prints the
# server's output, stops it and returns 1.
server_start() {
	local cmd
	server_cmd "$1"
	"${launch[@]}" "${cmd[@]}" >"$tmp/server.out" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		server_ready "$2" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "$1 did not answer over $2:" >&2
	tail -5 "$tmp/server.out" >&2
	server_stop
	return 1
}

# server_stop stops the running server: TERM, then KILL after 5 s.
server_stop() {
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
}

# machine_line prints what the figures depend on: CPU, kernel, whether the
# kernel isolates page tables (PTI makes every system call dearer), and the
# load average (other work on the machine shares the servers' CPU).
machine_line() {
	local cpu meltdown
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	meltdown=$(cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null || echo unknown)
	echo "machine: ${cpu:-unknown CPU}, $(nproc) CPUs, Linux $(uname -r), meltdown: $meltdown;" \
		"load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# versions prints the version of each peer found.
versions() {
	local v=()
	[[ -z $(server_missing named) ]] && v+=("$("$(command -v named || echo /usr/sbin/named)" -v)")
	[[ -z $(server_missing dnsdist) ]] && v+=("$(dnsdist --version 2>&1 | head -1)")
	[[ -z $(server_missing coredns) ]] && v+=("$("$(coredns_bin)" -version 2>&1 | head -1)")
	v+=("dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2; exit}')" "$(go version)")
	printf 'versions: %s' "${v[0]}"
	printf '; %s' "${v[@]:1}"
	echo
}
