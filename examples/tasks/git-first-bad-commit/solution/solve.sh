#!/bin/bash
# Reference solution: git bisect with check.sh as the oracle.
set -euo pipefail
cd /workspace/repo
git bisect start main v1.0 >/dev/null
git bisect run sh -c 'PYTHONDONTWRITEBYTECODE=1 ./check.sh' >/tmp/bisect.log 2>&1 || true
git rev-parse refs/bisect/bad > /workspace/first_bad.txt
git bisect reset >/dev/null 2>&1
cat /workspace/first_bad.txt
