#!/usr/bin/env bash
# The forwarding benchmark: DNS over UDP in, DoT (and DoH) out to nmecho
# as the upstream. bench/forward (dnsmsg.Client) against CoreDNS's
# forward plugin over DoT, side by side with the same upstream. The
# forwarder runs alone on CPU 0 with GOMAXPROCS=1; nmecho (one worker) and
# dnsperf share the other CPU. Reported: dnsperf's QPS and the forwarder's
# CPU time per query, the figure that holds when the machine is shared.
#
# usage: bench/forward.sh [seconds] [runs]   (5 s, 3 runs by default)
#   COREDNS: the CoreDNS binary (default ~/.cache/netmgr-bench/coredns,
#   built with go install github.com/coredns/coredns@v1.15.0); without it
#   only bench/forward is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
port=${PORT:-5450}
dotport=$((port + 1))
dohport=$((port + 2))
coredns=${COREDNS:-$HOME/.cache/netmgr-bench/coredns}
command -v dnsperf >/dev/null || { echo "dnsperf not installed (apt-get install dnsperf)" >&2; exit 1; }
ncpu=$(nproc)
other=$((ncpu > 1 ? 1 : 0))
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
go build -o "$tmp/forward" ./bench/forward
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
clk=$(getconf CLK_TCK)

GOMAXPROCS=1 taskset -c "$other" "$tmp/nmecho" -workers 1 -udp "" -tcp "" -dot "127.0.0.1:$dotport" \
	-doh "127.0.0.1:$dohport" -cert "$tmp/cert.pem" -key "$tmp/key.pem" >"$tmp/nmecho.out" 2>&1 &
pids+=($!)

cat >"$tmp/Corefile" <<CONF
.:$port {
	bind 127.0.0.1
	forward . tls://127.0.0.1:$dotport {
		tls $tmp/cert.pem
		tls_servername localhost
	}
}
CONF

# measure name command...: starts the forwarder on CPU 0, loads it with
# dnsperf and prints one line per run.
measure() {
	local name=$1
	shift
	for run in $(seq 1 "$runs"); do
		GOMAXPROCS=1 taskset -c 0 "$@" >"$tmp/fwd.out" 2>&1 &
		local pid=$!
		pids+=("$pid")
		for _ in $(seq 1 50); do
			dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" ready.test >/dev/null 2>&1 && break
		done
		local cpu0 cpu1
		cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
		taskset -c "$other" dnsperf -s 127.0.0.1 -p "$port" -d testdata/queries.txt -c 8 -q 500 -l "$secs" >"$tmp/perf.out" 2>&1
		cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null || true
		awk -v n="$name" -v r="$run" -v t=$((cpu1 - cpu0)) -v hz="$clk" '
			/Queries completed:/ { c = $3 } /Queries lost:/ { l = $3 } /Queries per second:/ { q = $4 }
			END { printf "%-14s run %d: %8.0f qps, %s lost, forwarder CPU %.1f us/query\n", n, r, q, l, (c ? t / hz / c * 1e6 : 0) }' "$tmp/perf.out" |
			tee -a "$tmp/results"
	done
}

measure "forward DoT" "$tmp/forward" -listen "127.0.0.1:$port" -upstream "tls://127.0.0.1:$dotport" -ca "$tmp/cert.pem"
measure "forward DoH" "$tmp/forward" -listen "127.0.0.1:$port" -upstream "https://127.0.0.1:$dohport/dns-query" -ca "$tmp/cert.pem"
if [ -x "$coredns" ]; then
	measure "CoreDNS DoT" "$coredns" -conf "$tmp/Corefile"
else
	echo "CoreDNS not found at $coredns (set COREDNS): skipped" >&2
fi

# The mean CPU per query of each forwarder, and CoreDNS's over ours.
awk '{ name = $1 " " $2; sub(/.*CPU /, ""); us[name] += $1; n[name]++ }
	END {
		for (k in us) printf "%-14s mean %.1f us/query\n", k, us[k] / n[k]
		if (n["CoreDNS DoT"] && n["forward DoT"])
			printf "CoreDNS DoT / forward DoT CPU per query: %.2fx\n", (us["CoreDNS DoT"] / n["CoreDNS DoT"]) / (us["forward DoT"] / n["forward DoT"])
	}' "$tmp/results"
