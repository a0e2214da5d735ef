#!/bin/bash
# Harbor-compatible check (kwaigym itself uses [verifier] kind = "swe" from task.toml):
# copy the hidden test files over the project, run the suite, reward 1 iff every test passes.
set -u
mkdir -p /logs/verifier
cp -r /tests/files/. /workspace/
cd /workspace
python3 -m pytest -rA -p no:cacheprovider tests 2>&1 | tee /logs/verifier/pytest.log
if [ "${PIPESTATUS[0]}" -eq 0 ]; then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi
