#!/bin/bash
# Reward 1 iff /workspace/archive holds exactly the expected files and duplicates list.
mkdir -p /logs/verifier
if python3 /tests/check_archive.py; then
    echo 1 > /logs/verifier/reward.txt
else
    echo 0 > /logs/verifier/reward.txt
fi
