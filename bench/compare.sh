#!/usr/bin/env bash
# Side by side: nmecho, bench/refserver (github.com/miekg/dns, net/http for
# DoH) and BIND 9's named (authoritative for one small zone), each with one
# worker pinned to CPU 1 with taskset, loaded by dnsperf pinned to CPU 0.
# Per transport and server it prints the median over the runs of: QPS at
# saturation (dnsperf -c 8 -q 200), the server's CPU time per query (from
# /proc/PID/stat), lost queries, and the p99 latency at half of that
# server's own QPS (dnsperf -Q, per-query latencies from -v); then the
# ratios to the reference and to named.
#
# usage: bench/compare.sh [seconds] [runs] [transport...]
#   defaults: 5 seconds, 3 runs, udp tcp dot doh. SERVERS="nmecho ref named"
#   picks the servers. Needs dnsperf, dig, named (Debian bind9), openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
shift $(($# > 2 ? 2 : $#))
transports=${*:-udp tcp dot doh}
servers=${SERVERS:-nmecho ref named}
for tool in dnsperf dig openssl taskset; do
	command -v $tool >/dev/null || { echo "$tool not installed" >&2; exit 1; }
done
named=$(command -v named || echo /usr/sbin/named)
ncpu=$(nproc)
srvcpu=$((ncpu > 1 ? 1 : 0))
clk=$(getconf CLK_TCK)
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
go build -o "$tmp/refserver" ./bench/refserver
port=5399 dotport=5400 dohport=5401

# named: one small zone answering every query of testdata/queries.txt.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
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

start() {
	case "$1" in
	nmecho) GOMAXPROCS=1 taskset -c "$srvcpu" "$tmp/nmecho" -workers 1 -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" \
		-dot "127.0.0.1:$dotport" -doh "127.0.0.1:$dohport" >"$tmp/server.out" 2>&1 & ;;
	ref) GOMAXPROCS=1 taskset -c "$srvcpu" "$tmp/refserver" -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" \
		-dot "127.0.0.1:$dotport" -doh "127.0.0.1:$dohport" >"$tmp/server.out" 2>&1 & ;;
	named) taskset -c "$srvcpu" "$named" -g -n 1 -c "$tmp/named.conf" >"$tmp/server.out" 2>&1 & ;;
	esac
	pid=$!
	for _ in $(seq 1 100); do
		dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.example.com >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "$1 did not start:" >&2
	cat "$tmp/server.out" >&2
	exit 1
}

stop() {
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
}

target() {
	case "$1" in
	udp | tcp) echo $port ;;
	dot) echo $dotport ;;
	doh) echo $dohport ;;
	esac
}

# One run: saturation, then latency at half of it. Prints
# "qps cpu_us_per_query lost p99_ms".
run() {
	local mode=$1 p
	p=$(target "$mode")
	local cpu0 cpu1
	cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	taskset -c 0 dnsperf -m "$mode" -s 127.0.0.1 -p "$p" -d testdata/queries.txt -c 8 -q 200 -l "$secs" >"$tmp/sat.out" 2>&1
	cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	local qps completed lost
	qps=$(awk '/Queries per second:/{printf "%d", $4}' "$tmp/sat.out")
	completed=$(awk '/Queries completed:/{print $3}' "$tmp/sat.out")
	lost=$(awk '/Queries lost:/{print $3}' "$tmp/sat.out")
	taskset -c 0 dnsperf -m "$mode" -s 127.0.0.1 -p "$p" -d testdata/queries.txt -c 8 -q 200 -l "$secs" \
		-Q $((qps / 2 > 0 ? qps / 2 : 1)) -v 2>&1 | awk '/^> /{print $NF}' | sort -g >"$tmp/lat"
	local n p99
	n=$(wc -l <"$tmp/lat")
	p99=$(awk -v n="$n" 'NR == int(n * 0.99 + 0.5) {printf "%.3f", $1 * 1000; exit}' "$tmp/lat")
	awk -v q="$qps" -v c="$completed" -v t=$((cpu1 - cpu0)) -v hz="$clk" -v l="$lost" -v p="${p99:-nan}" \
		'BEGIN { printf "%d %.2f %d %s\n", q, t / hz / c * 1e6, l, p }'
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

results="$tmp/results"
: >"$results"
for mode in $transports; do
	for server in $servers; do
		: >"$tmp/runs"
		for r in $(seq 1 "$runs"); do
			start "$server"
			run "$mode" | tee -a "$tmp/runs" | sed "s/^/# $mode $server run $r: qps cpu_us lost p99_ms = /" >&2
			stop
		done
		printf '%s %s' "$mode" "$server" >>"$results"
		for col in 1 2 3 4; do
			printf ' %s' "$(awk -v c=$col '{print $c}' "$tmp/runs" | median)" >>"$results"
		done
		echo >>"$results"
	done
done

echo
echo "| transport | server | QPS | CPU/query | lost | p99 at half load | QPS / ref | QPS / named | CPU / named |"
echo "|---|---|---|---|---|---|---|---|---|"
awk '
	{ q[$1, $2] = $3; c[$1, $2] = $4; row[NR] = $0 }
	END {
		for (i = 1; i <= NR; i++) {
			split(row[i], f, " ")
			m = f[1]; s = f[2]
			rq = (q[m, "ref"] > 0) ? sprintf("%.2fx", f[3] / q[m, "ref"]) : "-"
			nq = (q[m, "named"] > 0) ? sprintf("%.2fx", f[3] / q[m, "named"]) : "-"
			nc = (c[m, "named"] > 0) ? sprintf("%.2fx", f[4] / c[m, "named"]) : "-"
			printf "| %s | %s | %d | %.2f µs | %d | %s ms | %s | %s | %s |\n", m, s, f[3], f[4], f[5], f[6], rq, nq, nc
		}
	}' "$results"
