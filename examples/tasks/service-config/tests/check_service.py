"""Start the service with start.sh, probe it over loopback, stop it with stop.sh."""

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request

SERVICE = "/workspace/service"
PID_FILE = f"{SERVICE}/app.pid"
BASE = "http://127.0.0.1:8085"
APP_SHA256 = sys.argv[1]


def get(path):
    with urllib.request.urlopen(BASE + path, timeout=3) as resp:
        return resp.status, resp.read().decode()


def listening(port):
    """Local addresses (hex ip, port) in LISTEN state from /proc/net/tcp{,6}."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            ip, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(ip)
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def check():
    if hashlib.sha256(open(f"{SERVICE}/app.py", "rb").read()).hexdigest() != APP_SHA256:
        return "app.py was modified"
    for name in ("service.ini", "start.sh", "stop.sh"):
        if not os.path.isfile(f"{SERVICE}/{name}"):
            return f"{SERVICE}/{name} is missing"
    os.makedirs(f"{SERVICE}/logs", exist_ok=True)
    if os.path.exists(f"{SERVICE}/logs/access.log"):
        os.remove(f"{SERVICE}/logs/access.log")
    started = time.monotonic()
    try:
        rc = subprocess.run(
            ["bash", f"{SERVICE}/start.sh"],
            cwd=SERVICE,
            timeout=15,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
    except subprocess.TimeoutExpired:
        return "start.sh did not return within 15 s (it must start the server in the background)"
    if rc != 0:
        return f"start.sh exited with {rc}"
    deadline = started + 15
    while True:
        try:
            status, body = get("/health")
            break
        except OSError:
            if time.monotonic() > deadline:
                return "nothing answers on http://127.0.0.1:8085/health"
            time.sleep(0.2)
    if (status, body.strip()) != (200, "ok"):
        return f"/health answered {status} {body!r}"
    status, body = get("/greeting")
    if body.strip() != "hello from kwaigym":
        return f"/greeting answered {body!r}"
    status, body = get("/")
    if body != open("/workspace/site/index.html").read():
        return "/ does not serve /workspace/site/index.html"
    status, body = get("/docs/setup.txt")
    if body != open("/workspace/site/docs/setup.txt").read():
        return "/docs/setup.txt is not served from /workspace/site"
    addresses = listening(8085)
    if addresses != {"0100007F"}:
        return f"port 8085 should be bound to 127.0.0.1 only; listening addresses (hex): {sorted(addresses)}"
    try:
        pid = int(open(PID_FILE).read().strip())
    except (OSError, ValueError):
        return f"{PID_FILE} is missing or does not hold a PID"
    if not alive(pid) or "app.py" not in open(f"/proc/{pid}/cmdline").read():
        return f"PID {pid} from {PID_FILE} is not the running app.py"
    time.sleep(0.3)
    try:
        log = open(f"{SERVICE}/logs/access.log").read()
    except OSError:
        return "no access log at /workspace/service/logs/access.log"
    if "GET /greeting 200" not in log:
        return f"access log does not record the requests: {log[:200]!r}"
    try:
        subprocess.run(
            ["bash", f"{SERVICE}/stop.sh"],
            cwd=SERVICE,
            timeout=15,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "stop.sh did not return within 15 s"
    deadline = time.monotonic() + 10
    while alive(pid) or listening(8085):
        if time.monotonic() > deadline:
            return "the server is still running after stop.sh"
        time.sleep(0.2)
    if os.path.exists(PID_FILE):
        return "stop.sh did not remove the PID file"
    return None


def cleanup():
    """Stop any app.py left running (a failed check returns before stop.sh)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = open(f"/proc/{entry}/cmdline").read()
            except OSError:
                continue
            if "app.py" in cmdline:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


if __name__ == "__main__":
    try:
        problem = check()
    finally:
        cleanup()
    print(problem or "service deployed correctly")
    sys.exit(1 if problem else 0)
