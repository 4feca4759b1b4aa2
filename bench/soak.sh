#!/usr/bin/env bash
# Soak nmecho with mixed load for a bounded time: dnsperf over UDP, TCP, DoT
# and DoH at once (new TCP/DoT/DoH connections all along, as dnsperf
# reconnects after each run), with nmecho's RSS, goroutines and heap sampled
# every few seconds. They must level off: the script fails if the last
# third of the run averages more than 20% above the middle third.
#
# usage: bench/soak.sh [seconds]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
every=$((secs / 12 > 0 ? secs / 12 : 1))
for tool in dnsperf dig; do
	command -v $tool >/dev/null || { echo "$tool not installed" >&2; exit 1; }
done
tmp=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; pkill -P $$ dnsperf 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
port=5499
"$tmp/nmecho" -udp "127.0.0.1:$port" -tcp "127.0.0.1:$port" -dot "127.0.0.1:$((port + 1))" \
	-doh "127.0.0.1:$((port + 2))" -report "${every}s" >"$tmp/nmecho.out" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
	dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
	sleep 0.1
done
end=$((SECONDS + secs))
# Each load runs in short rounds until the end: connections come and go.
load() {
	local mode=$1 p=$2
	while [ $SECONDS -lt $end ]; do
		dnsperf -m "$mode" -s 127.0.0.1 -p "$p" -d testdata/queries.txt -c 4 -q 20 -Q 3000 \
			-l $((end - SECONDS < 5 ? (end - SECONDS > 0 ? end - SECONDS : 1) : 5)) >>"$tmp/$mode.out" 2>&1 || true
	done
}
load udp $port & load tcp $port & load dot $((port + 1)) & load doh $((port + 2)) &
echo "time_s rss_kib goroutines heap_kib answered"
while [ $SECONDS -lt $end ]; do
	sleep "$every"
	rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
	rep=$(grep 'nmecho: report' "$tmp/nmecho.out" | tail -1)
	g=$(sed -n 's/.*goroutines=\([0-9]*\).*/\1/p' <<<"$rep")
	h=$(sed -n 's/.*heap=\([0-9]*\)KiB.*/\1/p' <<<"$rep")
	s=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$rep")
	echo "$SECONDS $rss ${g:-0} ${h:-0} ${s:-0}" | tee -a "$tmp/samples"
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
kill -TERM "$pid"
wait "$pid" || { echo "nmecho did not exit cleanly" >&2; exit 1; }
pid=
lost=$(awk '/Queries lost:/{s += $3} END {print s + 0}' "$tmp"/{udp,tcp,dot,doh}.out)
echo "queries lost over the run: $lost"
tail -1 "$tmp/nmecho.out"
awk '
	{ rss[NR] = $2; g[NR] = $3 }
	END {
		n = NR; a = int(n / 3); b = int(2 * n / 3)
		for (i = a + 1; i <= b; i++) { mr += rss[i]; mg += g[i] }
		for (i = b + 1; i <= n; i++) { lr += rss[i]; lg += g[i] }
		mr /= (b - a); mg /= (b - a); lr /= (n - b); lg /= (n - b)
		printf "middle third: rss %.0f KiB, goroutines %.0f; last third: rss %.0f KiB, goroutines %.0f\n", mr, mg, lr, lg
		if (lr > mr * 1.2 || lg > mg * 1.2 + 10) { print "NOT levelling off"; exit 1 }
		print "levelled off"
	}' "$tmp/samples"
