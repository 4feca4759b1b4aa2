#!/usr/bin/env bash
# Load nmecho with dnsperf and report QPS, lost queries and nmecho's CPU time
# per query. nmecho runs with one worker pinned to one CPU, dnsperf on
# another, as in shared/PERF-NOTES.md.
#
# usage: bench/dnsperf.sh [mode] [seconds] [runs]   (mode: udp, tcp or dot; default 5 s, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-udp}
secs=${2:-5}
runs=${3:-3}
port=${PORT:-5399}
command -v dnsperf >/dev/null || { echo "dnsperf not installed (apt-get install dnsperf)" >&2; exit 1; }
ncpu=$(nproc)
srvcpu=$((ncpu > 1 ? 1 : 0))
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
clk=$(getconf CLK_TCK)
for run in $(seq 1 "$runs"); do
	dotport=$((port + 1))
	GOMAXPROCS=1 taskset -c "$srvcpu" "$tmp/nmecho" -workers 1 -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" \
		-dot "127.0.0.1:$dotport" -doh "" >"$tmp/nmecho.out" &
	pid=$!
	target=$port
	[ "$mode" = dot ] && target=$dotport
	# Wait until nmecho answers.
	for _ in $(seq 1 50); do
		dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
	done
	cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	taskset -c 0 dnsperf -m "$mode" -s 127.0.0.1 -p "$target" -d testdata/queries.txt -c 8 -q 200 -l "$secs" >"$tmp/perf.out" 2>&1
	cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	kill -TERM "$pid"; wait "$pid" || true
	completed=$(awk '/Queries completed:/{print $3}' "$tmp/perf.out")
	lost=$(awk '/Queries lost:/{print $3}' "$tmp/perf.out")
	qps=$(awk '/Queries per second:/{print $4}' "$tmp/perf.out")
	awk -v c="$completed" -v t=$((cpu1 - cpu0)) -v hz="$clk" -v q="$qps" -v l="$lost" -v r="$run" -v m="$mode" \
		'BEGIN { printf "run %d %s: %s qps, %d completed, %s lost, nmecho CPU %.2f us/query\n", r, m, q, c, l, t / hz / c * 1e6 }'
done
