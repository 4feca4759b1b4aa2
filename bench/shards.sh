#!/usr/bin/env bash
# Shards: nmecho with one shard on one CPU against two shards on both
# CPUs, under dnsperf with 128 flows (-c 128; it shares CPU 0 with a shard
# in the two-shard runs). The two alternate, run after run; it prints each
# run (lines starting with #), then per configuration the medians of QPS
# and of CPU time per query, the ratio of the CPU medians, how the shards
# split the replies in the median run, and the smallest share of the
# replies a shard sent in any quarter of a second under load, over all
# runs (no shard should idle while the other works).
#
# usage: bench/shards.sh [mode] [seconds] [runs]
#   mode udp or tcp; defaults: udp, 5 s, 3 runs.
#   RATE=N: dnsperf sends N queries/s (-Q) instead of as many as it can.
#   PROCS=N: both configurations get GOMAXPROCS=N and both CPUs, so that
#   only the number of shards differs (by default the one-shard runs have
#   GOMAXPROCS=1 and CPU 1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-udp}
secs=${2:-5}
runs=${3:-3}
port=5599
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
clk=$(getconf CLK_TCK)
label="$mode${RATE:+ at $RATE/s}${PROCS:+, GOMAXPROCS=$PROCS}"

# one WORKERS: a load run; appends "qps cpu_us lost shards lowshare" to
# $tmp/r$WORKERS.
one() {
	local workers=$1
	local flags=(-workers "$workers" -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" -dot "" -doh "" -report 250ms)
	if [ -n "${PROCS:-}" ]; then
		GOMAXPROCS=$PROCS "$tmp/nmecho" "${flags[@]}" >"$tmp/out" 2>&1 &
	elif [ "$workers" = 1 ]; then
		GOMAXPROCS=1 taskset -c 1 "$tmp/nmecho" "${flags[@]}" >"$tmp/out" 2>&1 &
	else
		GOMAXPROCS=2 "$tmp/nmecho" "${flags[@]}" >"$tmp/out" 2>&1 &
	fi
	pid=$!
	for _ in $(seq 1 50); do
		dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
		sleep 0.1
	done
	local cpu0 cpu1 shards completed qps lost
	cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	taskset -c 0 dnsperf -m "$mode" -s 127.0.0.1 -p "$port" -d testdata/queries.txt -c 128 -q 256 ${RATE:+-Q $RATE} -l "$secs" >"$tmp/perf" 2>&1
	cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	sleep 1.1
	shards=$(grep 'nmecho: report' "$tmp/out" | tail -1 | sed 's/.*shards=//')
	# The smaller shard's share of each quarter second's replies, among
	# the quarters with at least half of the busiest one's (ramps left out).
	lowshare=$(awk -F'shards=' '/nmecho: report/ {
		n = split($2, v, ",")
		if (n == 2 && seen) {
			da = v[1] - pa; db = v[2] - pb
			if (da + db > 0) { k++; tot[k] = da + db; low[k] = (da < db ? da : db) / (da + db) }
		}
		pa = v[1]; pb = v[2]; seen = 1
	}
	END {
		if (!k) { print "-"; exit }
		for (i = 1; i <= k; i++) if (tot[i] > m) m = tot[i]
		min = 1
		for (i = 1; i <= k; i++) if (tot[i] >= m / 2 && low[i] < min) min = low[i]
		printf "%.1f\n", min * 100
	}' "$tmp/out")
	# The server's system calls (reads and writes of the mode's transport)
	# per message received, from the last report.
	calls=$(grep 'nmecho: report' "$tmp/out" | tail -1 | awk -v t="$mode" '{
		for (i = 1; i <= NF; i++) {
			if ($i ~ /^received=/) { split($i, a, "="); r = a[2] }
			if (index($i, t "=reads:") == 1) { split($i, b, /[:,]/); rd = b[2]; wr = b[4] }
		}
	}
	END { if (r > 0 && rd + wr > 0) printf "%.3f\n", (rd + wr) / r; else print "-" }')
	kill -TERM "$pid"
	wait "$pid" || true
	pid=
	completed=$(awk '/Queries completed:/{print $3}' "$tmp/perf")
	qps=$(awk '/Queries per second:/{printf "%d", $4}' "$tmp/perf")
	lost=$(awk '/Queries lost:/{print $3}' "$tmp/perf")
	awk -v c="$completed" -v t=$((cpu1 - cpu0)) -v hz="$clk" -v q="$qps" -v l="$lost" -v s="$shards" -v ls="$lowshare" -v sc="$calls" \
		'BEGIN { printf "%d %.2f %s %s %s %s\n", q, t / hz / c * 1e6, l, s, ls, sc }' | tee -a "$tmp/r$workers" |
		sed "s|^|# $label, $workers shard(s): qps cpu_us lost shards lowshare% syscalls/q = |"
}

for _ in $(seq 1 "$runs"); do
	one 1
	one 2
done
# median FILE COLUMN
median() { sort -n -k"$2" "$1" | awk -v k="$2" '{ v[NR] = $k } END { print v[int((NR + 1) / 2)] }'; }
c1=$(median "$tmp/r1" 2)
for w in 1 2; do
	q=$(median "$tmp/r$w" 1)
	c=$(median "$tmp/r$w" 2)
	split=$(sort -n -k2 "$tmp/r$w" | awk -v n="$runs" 'NR == int((n + 1) / 2) { print $4 }')
	lost=$(awk '{ s += $3 } END { print s }' "$tmp/r$w")
	low=$(awk '$5 != "-" && (m == "" || $5 < m) { m = $5 } END { print m }' "$tmp/r$w")
	sc=$(median "$tmp/r$w" 6)
	awk -v w="$w" -v q="$q" -v c="$c" -v c1="$c1" -v s="$split" -v l="$lost" -v lb="$label" -v low="$low" -v sc="$sc" \
		'BEGIN { printf "%s, %d shard(s): %d qps, CPU %.2f us/query (%.2fx one shard), %s system calls/query, %d lost in all, replies per shard %s%s\n", lb, w, q, c, c / c1, sc, l, s, low == "" ? "" : ", smallest share of a quarter second " low "%" }'
done
