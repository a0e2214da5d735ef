#!/usr/bin/env python3
"""mini: kwaigym's own small coding agent. One tool, `bash`; it stops when the model answers
without calling a tool, and prints that answer as its final message.

It needs only python3 (standard library) in the image. It speaks the OpenAI Chat
Completions format to KWAIGYM_BASE_URL with KWAIGYM_API_KEY, so in an episode every
call it makes goes to kwaigym's proxy. Settings (environment):

    KWAIGYM_BASE_URL    API root, e.g. http://10.0.2.2:PORT/v1      (required)
    KWAIGYM_API_KEY     the episode's token                          (required)
    KWAIGYM_MODEL       model name sent with each call               (default: kwaigym-policy)
    MINI_MAX_TURNS      model calls before giving up                 (default: 50)
    MINI_CMD_TIMEOUT    seconds one command may run                  (default: 300)
    MINI_CALL_TIMEOUT   seconds to wait for the model                (default: 3600: slow policies)

Usage: agent.py "instruction". Exit codes: 0 finished, 1 gave up (turn limit), 2 model error.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

SYSTEM = (
    "You are a coding agent working in a Linux shell. Use the bash tool to inspect and change files "
    "and to run commands. When the task is done, answer with a short summary and no tool call."
)
BASH_TOOL = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a bash command; returns its exit code and output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the command to run"}},
            "required": ["command"],
        },
    },
}
MAX_OUTPUT = 20000


def call_model(messages):
    """One chat completion; returns the assistant message."""
    body = {
        "model": os.environ.get("KWAIGYM_MODEL", "kwaigym-policy"),
        "messages": messages,
        "tools": [BASH_TOOL],
    }
    request = urllib.request.Request(
        os.environ["KWAIGYM_BASE_URL"].rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Bearer " + os.environ["KWAIGYM_API_KEY"],
        },
    )
    timeout = float(os.environ.get("MINI_CALL_TIMEOUT", "3600"))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)["choices"][0]["message"]


def run_bash(command):
    """Run one command; the text the model sees back."""
    timeout = float(os.environ.get("MINI_CMD_TIMEOUT", "300"))
    try:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired:
        output, code = f"(command timed out after {timeout:.0f}s)", 124
    if len(output) > MAX_OUTPUT:
        output = output[: MAX_OUTPUT // 2] + "\n[... output truncated ...]\n" + output[-MAX_OUTPUT // 2 :]
    return f"exit code {code}\n{output}"


def main(instruction):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": instruction}]
    for _ in range(int(os.environ.get("MINI_MAX_TURNS", "50"))):
        try:
            message = call_model(messages)
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            print(f"mini: model call failed: {exc}", file=sys.stderr)
            return 2
        messages.append({k: v for k, v in message.items() if k in ("role", "content", "tool_calls")})
        calls = message.get("tool_calls") or []
        if not calls:
            print(message.get("content") or "")
            return 0
        for call in calls:
            try:
                command = json.loads(call["function"]["arguments"])["command"]
                result = run_bash(command)
            except (ValueError, KeyError, TypeError) as exc:
                result = f'invalid tool call: {exc}; call bash with {{"command": "..."}}'
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    print("mini: turn limit reached", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:])))
