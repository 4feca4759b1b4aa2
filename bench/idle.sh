#!/usr/bin/env bash
# Measure nmecho's memory per idle stream connection: RSS (VmRSS) growth and
# Go heap+stacks, divided by the number of connections. The kernel's socket
# memory is not in RSS.
#
# usage: bench/idle.sh [tcp|tls|dns-tcp|dot] [connections] [idle|echo|query]
#   tcp and tls load nmecho's raw echo listeners (a consumer goroutine per
#   connection); dns-tcp and dot its DNS listeners (idle mode, or query:
#   each connection has one query answered before it idles; not with
#   SERVER=plain, which answers nothing).
#   SERVER=plain measures bench/plainserver instead (dns-tcp and dot): a
#   goroutine per connection blocked in Read, the floor of Go's runtime,
#   net and crypto/tls. SERVER=ref measures bench/refserver, the same DNS
#   server on github.com/miekg/dns (dns-tcp and dot).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-tcp}
n=${2:-10000}
mode=${3:-idle}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; exec 3>&- 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/nmecho" ./cmd/nmecho
go build -o "$tmp/idleclient" ./bench/idleclient
go build -o "$tmp/plainserver" ./bench/plainserver
go build -o "$tmp/refserver" ./bench/refserver
flag=-echo; tlsflag=
case "$kind" in
tls) flag=-tls-echo; tlsflag=-tls ;;
dns-tcp) flag=-tcp ;;
dot) flag=-dot; tlsflag=-tls ;;
esac
echoflag=
[ "$mode" = echo ] && echoflag=-echo
[ "$mode" = query ] && echoflag=-query
server=${SERVER:-nmecho}
if [ "$server" = plain ]; then
	GOMAXPROCS=1 "$tmp/plainserver" -addr 127.0.0.1:5301 $tlsflag >"$tmp/nmecho.out" &
elif [ "$server" = ref ]; then
	if [ -n "$tlsflag" ]; then
		set -- -udp "" -tcp "" -dot 127.0.0.1:5301 -doh ""
	else
		set -- -udp "" -tcp 127.0.0.1:5301 -dot "" -doh ""
	fi
	GOMAXPROCS=1 "$tmp/refserver" "$@" >"$tmp/nmecho.out" 2>&1 &
else
	GOMAXPROCS=1 "$tmp/nmecho" -workers 1 -udp "" -tcp "" -dot "" -doh "" -doq "" $flag 127.0.0.1:5301 >"$tmp/nmecho.out" 2>&1 &
fi
pid=$!
sleep 0.5
rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
before=$(rss)
mkfifo "$tmp/in"
"$tmp/idleclient" -addr 127.0.0.1:5301 -n "$n" $tlsflag $echoflag <"$tmp/in" >"$tmp/client.out" &
cpid=$!
exec 3>"$tmp/in"
until grep -q ready "$tmp/client.out" 2>/dev/null; do sleep 0.2; kill -0 $cpid; done
sleep 1
after=$(rss)
threads=$(awk '/Threads/{print $2}' "/proc/$pid/status")
exec 3>&-
wait $cpid
awk -v b="$before" -v a="$after" -v n="$n" -v k="$server $kind" -v m="$mode" -v th="$threads" \
	'BEGIN { printf "%s %s: %d connections, RSS %d KiB -> %d KiB: %.2f KiB per connection (%d threads)\n", k, m, n, b, a, (a - b) / n, th }'
