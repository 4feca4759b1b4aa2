# Tables of bench/saturated.sh from its results, one line per run:
#   mode server qps lost cpu% recv/read sent/write
# (lost is "fail" when that run measured nothing; the per-call figures are
# "n/a" except for nmecho). Variables: quota (percent), servers and
# transports (space-separated, in the order to print).

# median of the n values v[1..n], sorted in place; "-" when n is 0.
function median(v, n,    i, j, x) {
	if (n == 0)
		return "-"
	for (i = 2; i <= n; i++) {
		x = v[i]
		for (j = i - 1; j >= 1 && v[j] > x; j--)
			v[j + 1] = v[j]
		v[j + 1] = x
	}
	return v[int((n + 1) / 2)]
}

# collect puts into out[1..] the values of column col of the runs of key k
# that measured something (or, for the per-call columns, have figures).
function collect(k, col, out,    i, n, f) {
	n = 0
	for (i = 1; i <= nrow; i++) {
		split(row[i], f, " ")
		if (f[1] SUBSEP f[2] != k || f[4] == "fail" || f[col] == "n/a")
			continue
		out[++n] = f[col] + 0
	}
	return n
}

function pct(c) { return c == "-" ? "-" : sprintf("%.1f%%", c) }

function kqps(q) { return q == "-" ? "-" : sprintf("%.1fk", q / 1000) }

function ratio(a, b) { return (a == "" || a == "-" || b == "-" || b == 0) ? "-" : sprintf("%.2fx", a / b) }

{
	row[++nrow] = $0
	k = $1 SUBSEP $2
	runs[k]++
	if ($4 == "fail")
		failed[k]++
}

END {
	label["udp"] = "UDP"; label["tcp"] = "TCP"; label["dot"] = "DoT"; label["doh"] = "DoH"; label["doq"] = "DoQ"
	ns = split(servers, sv, " ")
	nt = split(transports, tv, " ")
	for (t = 1; t <= nt; t++) {
		for (s = 1; s <= ns; s++) {
			k = tv[t] SUBSEP sv[s]
			if (!(k in runs))
				continue
			split("", v); qps[k] = median(v, collect(k, 3, v))
			split("", v); lost[k] = median(v, collect(k, 4, v))
			split("", v); cpu[k] = median(v, collect(k, 5, v))
			split("", v); rd[k] = median(v, collect(k, 6, v))
			split("", v); wr[k] = median(v, collect(k, 7, v))
		}
	}

	printf "\n## Saturated regime: each server limited to %d%% of one CPU\n\n", quota
	print "| transport | server | QPS | lost | CPU used | msgs per read, per write | nmecho / this |"
	print "|---|---|---|---|---|---|---|"
	for (t = 1; t <= nt; t++) {
		for (s = 1; s <= ns; s++) {
			k = tv[t] SUBSEP sv[s]
			if (!(k in runs))
				continue
			note = ""
			if (failed[k])
				note = sprintf(" (%d of %d runs failed)", failed[k], runs[k])
			else if (lost[k] != "-" && lost[k] > qps[k])
				note = " (more lost than a second of answers: no ratio)"
			else if (cpu[k] != "-" && cpu[k] < 0.9 * quota)
				note = " (under the quota: not saturated, or CPU busy)"
			per = (rd[k] == "-") ? "n/a" : sprintf("%.2f, %.2f", rd[k], wr[k])
			r = (note ~ /no ratio/) ? "-" : ratio(qps[tv[t] SUBSEP "nmecho"], qps[k])
			printf "| %s | %s | %s | %s | %s%s | %s | %s |\n", tv[t], sv[s], qps[k], lost[k], pct(cpu[k]), note, per, r
		}
	}

	printf "\n| QPS |"
	for (s = 1; s <= ns; s++)
		printf " %s |", sv[s]
	printf "\n|---|"
	for (s = 1; s <= ns; s++)
		printf "---|"
	print ""
	for (t = 1; t <= nt; t++) {
		printf "| %s |", label[tv[t]] ? label[tv[t]] : tv[t]
		for (s = 1; s <= ns; s++) {
			k = tv[t] SUBSEP sv[s]
			printf " %s |", (k in runs) ? kqps(qps[k]) : "–"
		}
		print ""
	}
}
