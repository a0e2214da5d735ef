#!/bin/bash
# Reward 1 iff modes/owners, the cron entry and a real run of backup.sh as svc are all correct.
mkdir -p /logs/verifier
if python3 /tests/check_backup.py; then
    echo 1 > /logs/verifier/reward.txt
else
    echo 0 > /logs/verifier/reward.txt
fi
