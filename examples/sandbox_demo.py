"""One real task, end to end, on kwaigym's sandbox layer (what `make demo` runs).

The task: a small Python project whose test fails; the instruction asks to make it pass.
The episode: a podman sandbox from the Debian base image with limits and the `proxy`
network policy (only one host port, where a stand-in model endpoint listens, is
reachable); the task files copied in; a scripted "agent" that asks that endpoint for
its next shell command from inside the sandbox and runs it in the persistent shell;
then the verifier runs the tests and turns the exit code into a reward. An empty
attempt is scored too, to show the task separates fixed from unfixed.

Later releases replace the scripted agent with real scaffolds behind the interception
proxy; the flow of an episode stays the same.
"""

from __future__ import annotations

import asyncio
import json
import time

from kwaigym import ImageStore, NetworkPolicy, PodmanBackend, Resources, SandboxSpec

FILES = {
    "calc.py": "def mean(xs):\n    return sum(xs) / (len(xs) + 1)\n",
    "test_calc.py": (
        "from calc import mean\nassert mean([1, 2, 3]) == 2, mean([1, 2, 3])\nprint('tests passed')\n"
    ),
}
INSTRUCTION = "The test in test_calc.py fails. Fix calc.py so that `python3 test_calc.py` passes."
# What the stand-in policy answers, call after call: look, fix, check, stop.
PLAN = [
    "cat calc.py test_calc.py",
    "sed -i 's/(len(xs) + 1)/len(xs)/' calc.py",
    "python3 test_calc.py",
    "DONE",
]
# The agent's side of one model call, run inside the sandbox (the sandbox reaches only PORT).
ASK = (
    'python3 -c "import urllib.request as u; '
    "print(u.urlopen('http://10.0.2.2:{port}/next').read().decode())\""
)


async def policy_endpoint(plan: list[str]) -> tuple[asyncio.Server, int]:
    """A stand-in model endpoint on the host's loopback: each GET returns the next command."""
    commands = iter(plan)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = next(commands, "DONE").encode()
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def run_episode(backend: PodmanBackend, image: str, *, attempt: bool) -> dict:
    """One episode: sandbox up, files in, agent loop, verifier, sandbox removed."""
    server, port = await policy_endpoint(PLAN if attempt else ["DONE"])
    spec = SandboxSpec(
        image=image,
        episode_id=f"demo-{'fix' if attempt else 'empty'}-{int(time.time())}",
        resources=Resources(cpus=1, memory_mb=512, pids=128, wall_time_s=120),
        network=NetworkPolicy(mode="proxy", proxy_port=port),
    )
    started = time.monotonic()
    transcript = []
    async with server, backend.sandbox(spec) as sb:
        for name, text in FILES.items():
            await sb.put_file(name, text.encode())
        for _turn in range(8):
            command = (await sb.shell(ASK.format(port=port), timeout=10)).stdout.strip()
            if command == "DONE":
                break
            result = await sb.shell(command, timeout=30)
            transcript.append((command, result.exit_code, result.output.strip()))
        verdict = await sb.exec(["python3", "test_calc.py"], timeout=30)
        blocked = await sb.shell(ASK.format(port=port + 1 if port < 65535 else port - 1), timeout=10)
    return {
        "episode": spec.episode_id,
        "turns": len(transcript),
        "transcript": transcript,
        "reward": 1.0 if verdict.ok else 0.0,
        "verifier_output": verdict.output.strip().splitlines()[-1],
        "other_port_reachable": blocked.ok,
        "seconds": round(time.monotonic() - started, 2),
    }


async def main() -> None:
    async with PodmanBackend() as backend:
        image = await ImageStore(backend.service).base_image()
        print(f"image: {image}\ninstruction: {INSTRUCTION}\n")
        fixed = await run_episode(backend, image, attempt=True)
        empty = await run_episode(backend, image, attempt=False)
    for command, code, output in fixed["transcript"]:
        print(f"$ {command}   [exit {code}]\n{output}\n")
    for name, ep in (("agent", fixed), ("empty attempt", empty)):
        print(
            f"{name:14} reward={ep['reward']:.1f}  turns={ep['turns']}  {ep['seconds']:.2f}s  "
            f"verifier: {ep['verifier_output']!r}  other host port reachable: {ep['other_port_reachable']}"
        )
    summary = {"reward": fixed["reward"], "empty_reward": empty["reward"], "seconds": fixed["seconds"]}
    print(json.dumps(summary))
    if fixed["reward"] != 1.0 or empty["reward"] != 0.0 or fixed["other_port_reachable"]:
        raise SystemExit("demo failed: the task did not separate the fix from the empty attempt")


if __name__ == "__main__":
    asyncio.run(main())
