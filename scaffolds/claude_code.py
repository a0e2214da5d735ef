"""The ``claude-code`` adapter: Anthropic's Claude Code CLI, black box.

The npm package ships a self-contained native binary (in its linux-x64 platform
package), so the bundle needs nothing from the image. Headless: ``claude -p
INSTRUCTION --output-format json``; as root it needs ``IS_SANDBOX=1`` to accept
``--dangerously-skip-permissions``. Its Bash tool runs shell commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import npm_bundle

VERSION = "2.1.197"


class ClaudeCodeScaffold:
    """Claude Code, speaking the Anthropic Messages API."""

    name = "claude-code"
    wire_format = "anthropic"
    target = f"{MOUNT_ROOT}/claude-code"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return npm_bundle("@anthropic-ai/claude-code", self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        binary_dir = bundle / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64"
        return [Mount(source=str(binary_dir), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        return [
            f"{self.target}/claude",
            "-p",
            instruction,
            "--dangerously-skip-permissions",
            "--output-format",
            "json",
        ]

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "ANTHROPIC_BASE_URL": route.base_url,
            "ANTHROPIC_API_KEY": route.token,
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "API_TIMEOUT_MS": "3600000",  # slow policies: wait up to an hour for a model answer
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("Bash", call_id, command=command, description="run a command")

    def outcome(self, result: ExecResult) -> AgentOutcome:
        try:
            report = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return AgentOutcome(exit_code=result.exit_code, final_message=result.output.strip(), ok=False)
        ok = result.ok and not report.get("is_error", False)
        return AgentOutcome(exit_code=result.exit_code, final_message=str(report.get("result", "")), ok=ok)
