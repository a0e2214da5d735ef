#!/bin/bash
# Reward 1 iff /workspace/report.csv matches the report computed from the access log.
# The argument is the sha256 of environment/logs/access.log (update it when the log changes).
mkdir -p /logs/verifier
if python3 /tests/check_report.py a3f8ea2e67bcef0b4576dd260dbddb41c123f118f2b1f1b8b7bef361389e392f; then
    echo 1 > /logs/verifier/reward.txt
else
    echo 0 > /logs/verifier/reward.txt
fi
