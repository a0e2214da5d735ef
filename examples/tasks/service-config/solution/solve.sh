#!/bin/bash
# Reference solution: config, start and stop scripts.
set -euo pipefail
cd /workspace/service
mkdir -p logs
cat > service.ini <<'INI'
[server]
bind = 127.0.0.1
port = 8085

[content]
root = /workspace/site
greeting = hello from kwaigym

[log]
access_log = /workspace/service/logs/access.log
INI
cat > start.sh <<'SH'
#!/bin/bash
# Start notes-service in the background; its PID goes to app.pid.
set -euo pipefail
cd /workspace/service
mkdir -p logs
nohup python3 /workspace/service/app.py --config /workspace/service/service.ini \
    >> logs/server.log 2>&1 < /dev/null &
echo $! > app.pid
SH
cat > stop.sh <<'SH'
#!/bin/bash
# Stop notes-service using app.pid.
set -u
cd /workspace/service
[ -f app.pid ] || exit 0
pid=$(cat app.pid)
kill "$pid" 2>/dev/null || true
for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
rm -f app.pid
SH
chmod +x start.sh stop.sh
