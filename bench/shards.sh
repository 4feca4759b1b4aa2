#!/usr/bin/env bash
# Shards: nmecho with one shard on one CPU against two shards on both
# CPUs, under dnsperf with 128 flows (-c 128; it shares CPU 0 with a shard
# in the second run). Prints CPU time per query for each, and how the
# two shards split the messages (no shard should idle while the other
# works).
#
# usage: bench/shards.sh [mode] [seconds]   (mode udp or tcp; default udp, 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-udp}
secs=${2:-5}
port=5599
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
clk=$(getconf CLK_TCK)
for workers in 1 2; do
	if [ "$workers" = 1 ]; then
		GOMAXPROCS=1 taskset -c 1 "$tmp/nmecho" -workers 1 -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" -dot "" -doh "" \
			-report 1s >"$tmp/out" 2>&1 &
	else
		GOMAXPROCS=2 "$tmp/nmecho" -workers 2 -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" -dot "" -doh "" \
			-report 1s >"$tmp/out" 2>&1 &
	fi
	pid=$!
	for _ in $(seq 1 50); do
		dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
		sleep 0.1
	done
	cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	taskset -c 0 dnsperf -m "$mode" -s 127.0.0.1 -p "$port" -d testdata/queries.txt -c 128 -q 256 ${RATE:+-Q $RATE} -l "$secs" >"$tmp/perf" 2>&1
	cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	sleep 1.1
	shards=$(grep 'nmecho: report' "$tmp/out" | tail -1 | sed 's/.*shards=//')
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	completed=$(awk '/Queries completed:/{print $3}' "$tmp/perf")
	qps=$(awk '/Queries per second:/{printf "%d", $4}' "$tmp/perf")
	lost=$(awk '/Queries lost:/{print $3}' "$tmp/perf")
	awk -v w="$workers" -v c="$completed" -v t=$((cpu1 - cpu0)) -v hz="$clk" -v q="$qps" -v l="$lost" -v s="$shards" -v m="$mode" \
		'BEGIN { printf "%s, %d shard(s): %d qps, %s lost, CPU %.2f us/query, messages per shard %s\n", m, w, q, l, t / hz / c * 1e6, s }'
done
