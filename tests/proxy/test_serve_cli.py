"""`kwaigym proxy serve`: the proxy as a process, for agents started by hand."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx


def test_proxy_serve_echoes_and_records(tmp_path):
    """The command prints the agent's settings, answers calls, records them, and stops on SIGTERM."""
    record = tmp_path / "calls.jsonl"
    cmd = [sys.executable, "-m", "kwaigym.cli", "proxy", "serve", "--echo", "--record", str(record)]
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            settings = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(5))
            url = settings["ANTHROPIC_BASE_URL"] + "/v1/messages"
            answer = httpx.post(url, json=body, headers={"x-api-key": settings["API_KEY"]}, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert answer.json()["content"][0]["text"] == "kwaigym echo: 1 messages"
    assert proc.returncode == 0
    (line,) = record.read_text().splitlines()
    call = json.loads(line)
    assert call["episode_id"] == "manual" and call["status"] == 200 and call["request_raw"] == body


def test_proxy_serve_needs_one_policy():
    """Neither --echo nor --upstream: a usage error, not a hang."""
    out = subprocess.run(
        [sys.executable, "-m", "kwaigym.cli", "proxy", "serve"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "exactly one of" in out.stderr
