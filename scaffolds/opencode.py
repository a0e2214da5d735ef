"""The ``opencode`` adapter: SST's OpenCode CLI, black box.

The npm package ships a self-contained native binary (Bun-compiled, in its linux-x64
platform package; it needs only glibc), so the bundle needs nothing from the image.
Headless: ``opencode run --format json`` with the instruction on stdin (as an argument it
would reach the model wrapped in quotes). Its config
(a custom ``@ai-sdk/openai-compatible`` provider pointed at the proxy) travels inline in
``OPENCODE_CONFIG_CONTENT``, so nothing is written to the image. OpenCode takes its
project directory from ``PWD`` (not the process cwd), hence ``PWD=/workspace``. Its
``bash`` tool runs shell commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import npm_bundle

VERSION = "1.18.33"
WORKDIR = "/workspace"
PROVIDER = "kwaigym"
MODEL = "agent"  # the proxy's policy answers whatever model name the agent sends


class OpenCodeScaffold:
    """OpenCode, speaking the OpenAI Chat Completions API through a custom provider."""

    name = "opencode"
    wire_format = "openai-chat"
    target = f"{MOUNT_ROOT}/opencode"
    package, platform_package, binary = "opencode-ai", "opencode-linux-x64", "bin/opencode"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return npm_bundle(self.package, self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle / "node_modules" / self.platform_package), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        # `opencode run` wraps an argv message holding spaces in double quotes, and reads a non-TTY
        # stdin into the message: so the instruction ($1, never part of the script) goes to stdin.
        return ["sh", "-c", 'i=$1; shift; printf %s "$i" | exec "$@"', self.name, instruction,
                f"{self.target}/{self.binary}", "run", "--format", "json", "--auto", "--pure", "--dir",
                WORKDIR]  # fmt: skip

    def config(self, route: EpisodeRoute) -> dict:
        """OpenCode's config: one provider (the proxy) for the main and the small model."""
        provider = {
            "npm": "@ai-sdk/openai-compatible",
            "name": "kwaigym proxy",
            "options": {
                "baseURL": f"{route.base_url}/v1",
                "apiKey": route.token,
                # slow policies: wait up to an hour for a model answer (defaults are 5 minutes)
                "timeout": False,
                "headerTimeout": 3_600_000,
                "chunkTimeout": 3_600_000,
            },
            "models": {MODEL: {"name": MODEL}},
        }
        return {
            "$schema": "https://opencode.ai/config.json",
            "provider": {PROVIDER: provider},
            "model": f"{PROVIDER}/{MODEL}",
            "small_model": f"{PROVIDER}/{MODEL}",
            "autoupdate": False,
            "share": "disabled",
        }

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "OPENCODE_CONFIG_CONTENT": json.dumps(self.config(route)),
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "PWD": WORKDIR,  # OpenCode takes its project directory from PWD, not from the cwd
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("bash", call_id, command=command, description="Run a command")

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read ``--format json`` events: the last text part the model wrote is the final message
        (synthetic ones, such as the prompt that resumes after compaction, are not); error events
        fail it."""
        texts, errors = [], []
        for line in result.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            part = event.get("part") if isinstance(event.get("part"), dict) else {}
            if event.get("type") == "text" and not part.get("synthetic"):
                texts.append(str(part.get("text", "")))
            elif event.get("type") == "error":  # e.g. {"name": "APIError", "data": {"message": ...}}
                error = event.get("error") if isinstance(event.get("error"), dict) else {}
                data = error.get("data") if isinstance(error.get("data"), dict) else {}
                detail = data.get("message")
                errors.append(f"{error.get('name', 'error')}: {detail}" if detail else json.dumps(error))
        if not texts and not errors:
            return AgentOutcome(exit_code=result.exit_code, final_message=result.output.strip(), ok=False)
        message = texts[-1].strip() if texts else "\n".join(errors)
        return AgentOutcome(exit_code=result.exit_code, final_message=message, ok=result.ok and not errors)
