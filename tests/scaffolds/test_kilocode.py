"""The Kilo Code adapter runs the real ``kilo`` binary in a sandbox, driven by a scripted policy."""

from __future__ import annotations

import json
import subprocess

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult
from scaffolds.check import CHECK_TEXT, check
from scaffolds.kilocode import KiloCodeScaffold
from tests.conftest import episode


def test_env_points_kilo_at_the_proxy():
    """The inline config enables one openai-compatible provider at the proxy's /v1 with the episode
    token, disables the title agent, and the environment turns telemetry and downloads off."""
    route = EpisodeRoute(episode_id="ep", host="10.0.2.2", port=8080, proxy_port=8081, token="tok")
    env = KiloCodeScaffold().env(route)
    config = json.loads(env["KILO_CONFIG_CONTENT"])
    (name,) = config["enabled_providers"]
    provider = config["provider"][name]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"]["baseURL"] == "http://10.0.2.2:8080/v1"
    assert provider["options"]["apiKey"] == "tok"
    assert provider["options"]["chunkTimeout"] == provider["options"]["headerTimeout"] == 3_600_000
    assert config["model"] == config["small_model"] == f"{name}/agent"
    assert config["agent"]["title"]["disable"] is True
    assert env["KILO_TELEMETRY_LEVEL"] == "off" and env["KILO_DISABLE_MODELS_FETCH"] == "1"


def test_command_pipes_the_instruction_verbatim():
    """The instruction is one argv element, out of the script, and reaches the agent's stdin byte for
    byte (``kilo run`` would quote an argv message that holds spaces)."""
    instruction = 'Fix "it" in $HOME `now`;\n  then; exit 1 \\ done'
    cmd = KiloCodeScaffold().command(instruction)
    assert cmd.count(instruction) == 1 and instruction not in cmd[2]
    kilo = cmd.index(instruction) + 1
    assert cmd[kilo].endswith("/bin/kilo") and cmd[kilo + 1] == "run" and "--auto" in cmd
    piped = subprocess.run([*cmd[:kilo], "cat"], capture_output=True, text=True, check=True)
    assert piped.stdout == instruction


@pytest.mark.podman
async def test_kilocode_writes_file_with_its_own_tool(backend, base_image):
    """Kilo runs the scripted command with its `bash` tool, then finishes; calls are openai-chat."""
    scaffold = KiloCodeScaffold()
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode("kilocode"))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message, report.outcome
    main = [c for c in report.calls if c.request and c.request.tools]
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    assert main[0].completion.tool_calls[0].name == "bash"
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == "openai-chat" and c.kind == "main" for c in report.calls)
    assert main[0].headers["user-agent"].startswith(f"Kilo-Code/{scaffold.version} ")


def test_outcome_reads_json_events():
    """The last text the model wrote is the final message (synthetic text, such as the prompt that
    resumes after compaction, is not); an error event (Kilo exits 1) fails the run."""
    scaffold = KiloCodeScaffold()

    def run(exit_code: int, *events: dict, stderr: str = "") -> ExecResult:
        stdout = "".join(json.dumps(e) + "\n" for e in events)
        return ExecResult(exit_code=exit_code, stdout=stdout, stderr=stderr, duration_s=1)

    text = {"type": "text", "part": {"type": "text", "text": "Done: the file is written.\n"}}
    resume = {"type": "text", "part": {"type": "text", "text": "Continue if...", "synthetic": True}}
    error = {"type": "error", "error": {"name": "ContextOverflowError", "data": {"message": "exhausted"}}}
    done = scaffold.outcome(run(0, {"type": "step_start", "part": {}}, text, resume))
    failed = scaffold.outcome(run(1, text, error))
    crashed = scaffold.outcome(run(2, stderr="boom"))
    assert done.ok and done.final_message == "Done: the file is written."
    assert not failed.ok and failed.exit_code == 1 and failed.final_message == "Done: the file is written."
    assert not scaffold.outcome(run(1, error)).ok
    assert scaffold.outcome(run(1, error)).final_message == "ContextOverflowError: exhausted"
    assert not crashed.ok and crashed.exit_code == 2 and "boom" in crashed.final_message
