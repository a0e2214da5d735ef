#!/bin/bash
# Reference solution: apply the fix. The solution dir is at /solution in the sandbox;
# fall back to the directory of this script when it is run from elsewhere.
set -euo pipefail
patch_file=/solution/solution.patch
[ -f "$patch_file" ] || patch_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/solution.patch"
cd /workspace
git apply --whitespace=nowarn "$patch_file"
