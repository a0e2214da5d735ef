#!/bin/bash
# Reference solution: parse the log with awk, aggregate, sort.
set -euo pipefail
cd /workspace
{
    echo "path,requests,errors,avg_ms"
    awk '
    /^[^ ]+ - - \[[^]]+\] "[A-Z]+ [^ ]+ HTTP\/[0-9.]+" [0-9][0-9][0-9] ([0-9]+|-) [0-9]+\.[0-9]+$/ {
        split($0, q, "\"")                     # q[2] = METHOD TARGET PROTOCOL
        split(q[2], req, " ")
        target = req[2]
        sub(/\?.*/, "", target)
        n = split(target, seg, "/")
        path = seg[1]
        for (i = 2; i <= n; i++) path = path "/" (seg[i] ~ /^[0-9]+$/ ? "{id}" : seg[i])
        split(q[3], tail, " ")                 # status bytes seconds
        count[path]++
        if (tail[1] >= 500 && tail[1] <= 599) errors[path]++
        ms[path] += tail[3] * 1000
    }
    END {
        for (p in count) printf "%s,%d,%d,%.1f\n", p, count[p], errors[p] + 0, ms[p] / count[p]
    }' logs/access.log | LC_ALL=C sort -t, -k2,2nr -k1,1
} > report.csv
