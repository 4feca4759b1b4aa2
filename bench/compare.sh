#!/usr/bin/env bash
# Two regimes, side by side. First the pinned one: nmecho, bench/refserver
# (github.com/miekg/dns, net/http for DoH) and BIND 9's named (authoritative
# for one small zone), each with one worker pinned to CPU 1 with taskset,
# loaded by dnsperf pinned to CPU 0. Per transport and server it prints the
# median over the runs of: QPS at saturation (dnsperf -c 8 -q 200), the
# server's CPU time per query (from /proc/PID/stat), lost queries, and the
# p99 latency at half of that server's own QPS (dnsperf -Q, per-query
# latencies from -v); then the ratios to the reference and to named.
# Then the saturated regime, bench/saturated.sh with the same arguments:
# each server in a cgroup at 25% of one CPU, more peers (dnsdist, CoreDNS,
# a C reflector). The servers are described in bench/servers.sh.
#
# usage: bench/compare.sh [seconds] [runs] [transport...]
#   defaults: 5 seconds, 3 runs, udp tcp dot doh. SERVERS="nmecho ref named"
#   picks the servers (any of bench/servers.sh); REGIME=pinned or
#   REGIME=saturated runs only that one. Needs dnsperf, dig, named (Debian
#   bind9), openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
secs=${1:-5}
runs=${2:-3}
shift $(($# > 2 ? 2 : $#))
transports=${*:-udp tcp dot doh}
regime=${REGIME:-both}
if [[ $regime == saturated ]]; then
	# shellcheck disable=SC2086 # one argument per transport
	exec bench/saturated.sh "$secs" "$runs" $transports
fi
servers=
for s in ${SERVERS:-nmecho ref named}; do
	why_not=$(server_missing "$s")
	if [[ -n $why_not ]]; then echo "skipping $s: $why_not" >&2; else servers+=" $s"; fi
done
for tool in dnsperf dig openssl taskset; do
	command -v $tool >/dev/null || { echo "$tool not installed" >&2; exit 1; }
done
ncpu=$(nproc)
srvcpu=$((ncpu > 1 ? 1 : 0))
clk=$(getconf CLK_TCK)
tmp=$(mktemp -d)
trap 'server_stop; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
launch=(taskset -c "$srvcpu")
port=5399 dotport=5400 dohport=5401
servers_setup

# One run: saturation, then latency at half of it. Prints
# "qps cpu_us_per_query lost p99_ms".
run() {
	local mode=$1 p
	p=$(server_port "$mode")
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
		server_serves "$server" "$mode" || continue
		[[ $mode != doq ]] || continue # dnsperf cannot load DoQ: the saturated regime measures it
		: >"$tmp/runs"
		for r in $(seq 1 "$runs"); do
			server_start "$server" "$mode" || exit 1
			run "$mode" | tee -a "$tmp/runs" | sed "s/^/# $mode $server run $r: qps cpu_us lost p99_ms = /" >&2
			server_stop
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
echo
machine_line
echo "pinned: servers on CPU $srvcpu with taskset, dnsperf -c 8 -q 200 -l $secs on CPU 0; median of $runs runs"
if [[ $regime != pinned ]]; then
	echo
	# shellcheck disable=SC2086 # one argument per transport
	bench/saturated.sh "$secs" "$runs" $transports
fi
