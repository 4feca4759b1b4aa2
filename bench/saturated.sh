#!/usr/bin/env bash
# The saturated regime: each server alone, pinned to CPU 1 in a cgroup
# limited to QUOTA% of one CPU (default 25), loaded by dnsperf (-c 8
# -q 200) on CPU 0, which is then never the bottleneck. A server's QPS at
# that budget says how much work each query costs it, whatever the load
# generator's own speed. Servers alternate run by run (A B C A B C ...);
# per transport and server it prints the medians over the runs of QPS,
# lost queries, the share of one CPU the server used (it should be close
# to QUOTA, or the server was not saturated), and for nmecho the messages
# per system call from its counters; then nmecho's QPS over each peer's.
# The peers are described in bench/servers.sh.
#
# usage: bench/saturated.sh [seconds] [runs] [transport...]
#   defaults: 5 seconds, 3 runs, udp tcp dot doh doq. DoQ (nmecho and
#   CoreDNS only) is loaded by bench/doqperf with CLIENTS connections
#   and OUTSTANDING/CLIENTS streams in flight each.
#   SERVERS="nmecho ref named dnsdist coredns reflector quicref" picks the servers;
#   QUOTA=25 (percent of one CPU), CLIENTS=8 and OUTSTANDING=200 (dnsperf
#   -c and -q), PORT=5410 (UDP and TCP; DoT PORT+1, DoH PORT+2),
#   DOH_METHOD=GET. Needs root (or a delegated cgroup), dnsperf, dig,
#   openssl, taskset, go; named, dnsdist, CoreDNS and cc where installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
secs=${1:-5}
runs=${2:-3}
shift $(($# > 2 ? 2 : $#))
transports=${*:-udp tcp dot doh doq}
quota=${QUOTA:-25}
clients=${CLIENTS:-8}
outstanding=${OUTSTANDING:-200}
method=${DOH_METHOD:-GET}
port=${PORT:-5410}
dotport=$((port + 1)) dohport=$((port + 2)) doqport=$((port + 3))
for tool in dnsperf dig openssl taskset go; do
	command -v $tool >/dev/null || { echo "$tool not installed" >&2; exit 1; }
done
ncpu=$(nproc)
srvcpu=$((ncpu > 1 ? 1 : 0))
clk=$(getconf CLK_TCK)
tmp=$(mktemp -d)
cg=
launch=()
cleanup() {
	server_stop
	if [[ -n $cg ]]; then rmdir "$cg" 2>/dev/null || echo "could not remove cgroup $cg" >&2; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cg_enter DIR: servers start inside the cgroup DIR, pinned to srvcpu.
cg_enter() {
	cg=$1
	# shellcheck disable=SC2016 # the inner shell expands these
	launch=(sh -c 'echo $$ >"$1" && shift && exec "$@"' sh "$cg/cgroup.procs" taskset -c "$srvcpu")
}

# limit_v2 ROOT: a child of the cgroup v2 root ROOT with cpu.max.
limit_v2() {
	local root=$1 dir=$1/netmgr-bench.$$
	grep -qw cpu "$root/cgroup.controllers" 2>/dev/null || { why+=("cgroup v2 at $root: no cpu controller"); return 1; }
	if ! grep -qw cpu "$root/cgroup.subtree_control" && ! { echo +cpu >"$root/cgroup.subtree_control"; } 2>/dev/null; then
		why+=("cgroup v2 at $root: cannot enable cpu in cgroup.subtree_control")
		return 1
	fi
	mkdir "$dir" 2>/dev/null || { why+=("cgroup v2: cannot create $dir"); return 1; }
	cg_enter "$dir"
	{ echo "$((quota * 1000)) 100000" >"$dir/cpu.max"; } 2>/dev/null || { why+=("cgroup v2: cannot write $dir/cpu.max"); return 1; }
	limit="cgroup v2, cpu.max \"$(cat "$dir/cpu.max")\""
}

# limit_v1 ROOT: a child of the cgroup v1 cpu hierarchy ROOT with a CFS quota.
limit_v1() {
	local root=$1 dir=$1/netmgr-bench.$$
	mkdir "$dir" 2>/dev/null || { why+=("cgroup v1: cannot create $dir"); return 1; }
	cg_enter "$dir"
	if ! { echo 100000 >"$dir/cpu.cfs_period_us" && echo $((quota * 1000)) >"$dir/cpu.cfs_quota_us"; } 2>/dev/null; then
		why+=("cgroup v1: cannot write $dir/cpu.cfs_quota_us")
		return 1
	fi
	limit="cgroup v1 cpu controller, cpu.cfs_quota_us $(cat "$dir/cpu.cfs_quota_us") per cpu.cfs_period_us 100000"
}

# limit_setup sets launch and limit: cgroup v2 if it has the cpu
# controller, else the cgroup v1 cpu controller, else systemd-run.
limit_setup() {
	local v2 v1
	why=()
	v2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
	if [[ -n $v2 ]] && limit_v2 "$v2"; then return; fi
	[[ -n $cg ]] && rmdir "$cg" 2>/dev/null && cg=
	v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/mounts)
	if [[ -n $v1 ]] && limit_v1 "$v1"; then return; fi
	[[ -n $cg ]] && rmdir "$cg" 2>/dev/null && cg=
	if systemd-run --scope --quiet -p "CPUQuota=$quota%" true 2>/dev/null; then
		launch=(systemd-run --scope --quiet -p "CPUQuota=$quota%" taskset -c "$srvcpu")
		limit="systemd-run --scope -p CPUQuota=$quota%"
		return
	fi
	why+=("systemd-run --scope does not work here")
	echo "cannot limit a server's CPU:" >&2
	printf '  %s\n' "${why[@]}" >&2
	exit 1
}

# nmecho_per_call prints nmecho's messages per read and per write system
# call from the last -report line ("n/a" where the counters are absent).
nmecho_per_call() {
	awk '/nmecho: report/ {line = $0}
	END {
		n = split(line, f, /[ ,;]+/)
		for (i = 1; i <= n; i++) if (split(f[i], kv, "=") == 2) v[kv[1]] += kv[2]
		if (v["reads"] > 0 && v["writes"] > 0) printf "%.2f %.2f", v["received"] / v["reads"], v["sent"] / v["writes"]
		else printf "n/a n/a"
	}' "$tmp/server.out"
}

# measure MODE SERVER: one dnsperf run; prints "qps lost cpu% recv/read sent/write"
# (lost is "fail" when dnsperf measured nothing).
measure() {
	local out=$tmp/perf.out cpu0 cpu1 per
	cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	if [[ $1 == doq ]]; then
		taskset -c 0 timeout $((secs + 30)) "$tmp/doqperf" -s "127.0.0.1:$(server_port doq)" -f testdata/queries.txt \
			-c "$clients" -q $((outstanding / clients)) -d "${secs}s" >"$out" 2>&1 || true
	else
		taskset -c 0 timeout $((secs + 30)) dnsperf -m "$1" -O "doh-method=$method" -s 127.0.0.1 -p "$(server_port "$1")" \
			-d testdata/queries.txt -c "$clients" -q "$outstanding" -l "$secs" >"$out" 2>&1 || true
	fi
	cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	per="n/a n/a"
	[[ $2 == nmecho ]] && per=$(nmecho_per_call)
	if ! grep -q 'Queries per second:' "$out"; then
		echo "dnsperf failed against $2 over $1: $(grep -m1 -v '^\[Status\]' "$out" | head -c 200)" >&2
	fi
	awk -v t=$((cpu1 - cpu0)) -v hz="$clk" -v s="$secs" -v per="$per" '
		/Queries sent:/ {sent = $3}
		/Queries lost:/ {lost = $3}
		/Queries per second:/ {qps = $4}
		/Run time \(s\):/ {secs = $4}
		END {
			if (qps == "") { lost = "fail" }
			if (secs == "") { secs = s }
			printf "%d %s %.1f %s\n", qps, lost, 100 * t / hz / secs, per
		}' "$out"
}

# run_all runs every server over every transport, runs times, alternating
# servers, and appends "mode server qps lost cpu% recv/read sent/write"
# to $tmp/results.
run_all() {
	local r mode server line
	for r in $(seq 1 "$runs"); do
		for mode in $transports; do
			for server in $servers; do
				server_serves "$server" "$mode" || continue
				server_start "$server" "$mode" || { echo "$mode $server 0 fail 0 n/a n/a" >>"$tmp/results"; continue; }
				line=$(measure "$mode" "$server")
				server_stop
				echo "# $mode $server run $r: qps lost cpu% recv/read sent/write = $line" >&2
				echo "$mode $server $line" >>"$tmp/results"
			done
		done
	done
}

servers=
for s in ${SERVERS:-nmecho ref named dnsdist coredns reflector quicref}; do
	why_not=$(server_missing "$s")
	if [[ -n $why_not ]]; then echo "skipping $s: $why_not" >&2; else servers+=" $s"; fi
done
limit_setup
servers_setup
echo "# $(machine_line)" >&2
echo "# $(versions)" >&2
echo "# limit: $limit; servers on CPU $srvcpu, dnsperf -c $clients -q $outstanding -l $secs on CPU 0; $runs runs" >&2
: >"$tmp/results"
run_all
awk -v quota="$quota" -v servers="$servers" -v transports="$transports" -f bench/saturated-table.awk "$tmp/results"
echo
machine_line
echo "limit: $limit; servers pinned to CPU $srvcpu; dnsperf -c $clients -q $outstanding -l $secs on CPU 0; median of $runs runs"
echo "command: QUOTA=$quota CLIENTS=$clients OUTSTANDING=$outstanding bench/saturated.sh $secs $runs $transports"
