#!/bin/bash
# Reward 1 iff /workspace/first_bad.txt names the first commit after v1.0 where check.sh fails.
# The arguments are the hashes of main and v1.0 as environment/make_repo.sh builds them (fixed dates make
# them reproducible; update them when make_repo.sh changes).
mkdir -p /logs/verifier
if python3 /tests/check_bisect.py faf986db47ef740bead5c0afafcee8502e47cdf1 8f79438d1507aa88d8fbffb32f66473b0f8583bb; then
    echo 1 > /logs/verifier/reward.txt
else
    echo 0 > /logs/verifier/reward.txt
fi
