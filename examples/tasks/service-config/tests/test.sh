#!/bin/bash
# Reward 1 iff the service starts with start.sh, answers as configured on 127.0.0.1:8085 only,
# and stops with stop.sh. The argument is the sha256 of environment/service/app.py (update it when app.py changes).
mkdir -p /logs/verifier
if timeout 100 python3 /tests/check_service.py 4bdb1ba1d473458cde097e073e97f8baffca65afa865d793aae672fe4f97ed36; then
    echo 1 > /logs/verifier/reward.txt
else
    echo 0 > /logs/verifier/reward.txt
fi
