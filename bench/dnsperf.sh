#!/usr/bin/env bash
# Load a DNS echo server with dnsperf and report QPS, lost queries and the
# server's CPU time per query. The server runs with one worker pinned to one
# CPU, dnsperf on another, as in shared/PERF-NOTES.md.
#
# usage: bench/dnsperf.sh [mode] [seconds] [runs]
#   mode: udp, tcp, dot or doh (default udp); 5 s and 3 runs by default.
#   SERVER=nmecho (default) or SERVER=ref (bench/refserver: miekg/dns, and
#   net/http for DoH); DOH_METHOD=GET (default) or POST.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-udp}
secs=${2:-5}
runs=${3:-3}
server=${SERVER:-nmecho}
method=${DOH_METHOD:-GET}
port=${PORT:-5399}
command -v dnsperf >/dev/null || { echo "dnsperf not installed (apt-get install dnsperf)" >&2; exit 1; }
ncpu=$(nproc)
srvcpu=$((ncpu > 1 ? 1 : 0))
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
case "$server" in
nmecho) go build -o "$tmp/server" ./cmd/nmecho; extra=(-workers 1) ;;
ref) go build -o "$tmp/server" ./bench/refserver; extra=() ;;
*) echo "SERVER must be nmecho or ref" >&2; exit 1 ;;
esac
clk=$(getconf CLK_TCK)
dotport=$((port + 1))
dohport=$((port + 2))
case "$mode" in
udp | tcp) target=$port ;;
dot) target=$dotport ;;
doh) target=$dohport ;;
*) echo "mode must be udp, tcp, dot or doh" >&2; exit 1 ;;
esac
for run in $(seq 1 "$runs"); do
	GOMAXPROCS=1 taskset -c "$srvcpu" "$tmp/server" "${extra[@]}" -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" \
		-dot "127.0.0.1:$dotport" -doh "127.0.0.1:$dohport" >"$tmp/server.out" 2>&1 &
	pid=$!
	# Wait until the server answers.
	for _ in $(seq 1 50); do
		dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
	done
	cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	taskset -c 0 dnsperf -m "$mode" -O "doh-method=$method" -s 127.0.0.1 -p "$target" -d testdata/queries.txt \
		-c 8 -q 200 -l "$secs" >"$tmp/perf.out" 2>&1
	cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	kill -TERM "$pid"
	wait "$pid" || true
	completed=$(awk '/Queries completed:/{print $3}' "$tmp/perf.out")
	lost=$(awk '/Queries lost:/{print $3}' "$tmp/perf.out")
	qps=$(awk '/Queries per second:/{print $4}' "$tmp/perf.out")
	awk -v c="$completed" -v t=$((cpu1 - cpu0)) -v hz="$clk" -v q="$qps" -v l="$lost" -v r="$run" -v m="$mode" -v s="$server" \
		'BEGIN { printf "run %d %s %s: %s qps, %d completed, %s lost, server CPU %.2f us/query\n", r, s, m, q, c, l, t / hz / c * 1e6 }'
done
