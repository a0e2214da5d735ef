"""The ``kilocode`` adapter: Kilo Code's CLI (``kilo``, a fork of OpenCode), black box.

The bundle is the platform package ``@kilocode/cli-linux-x64`` alone, named directly: it holds
a self-contained Bun-compiled binary (needing only glibc), and the ``@kilocode/cli`` wrapper
adds nothing but a postinstall that copies it (for 7.8.1 that postinstall fails: its platform
packages were never published; 7.7.9 is the newest platform package on npm).

Headless: ``kilo run --format json --auto``. ``kilo run`` wraps every argv word that contains a
space in double quotes (escaping inner quotes), so the instruction goes through stdin instead,
which it reads verbatim: ``sh -c`` pipes its first argument, a separate argv element never
interpolated into the script. The config (an ``@ai-sdk/openai-compatible`` provider pointed at
the proxy, the only provider enabled, so nothing asks api.kilo.ai for its model list) travels
inline in ``KILO_CONFIG_CONTENT``. The title agent is disabled: it would name the session at the
end of the turn, in a call that ``kilo run``'s exit usually cuts off. Compaction stays (a call
without tools, tagged auxiliary); sub-agents (the ``task`` tool) send ``x-parent-session-id``.
Its ``bash`` tool runs shell commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import npm_bundle

VERSION = "7.7.9"
PACKAGE = "@kilocode/cli-linux-x64"
WORKDIR = "/workspace"
PROVIDER = "kwaigym"
MODEL = "agent"  # the proxy's policy answers whatever model name the agent sends


class KiloCodeScaffold:
    """Kilo Code, speaking the OpenAI Chat Completions API through a custom provider."""

    name = "kilocode"
    wire_format = "openai-chat"
    target = f"{MOUNT_ROOT}/kilocode"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return npm_bundle(PACKAGE, self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle / "node_modules" / PACKAGE), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        kilo = [f"{self.target}/bin/kilo", "run", "--format", "json", "--auto", "--pure", "--dir", WORKDIR]
        # the instruction is $1 of the script, piped to stdin (see the module docstring)
        return ["sh", "-c", 'i=$1; shift; printf %s "$i" | exec "$@"', "kilo", instruction, *kilo]

    def config(self, route: EpisodeRoute) -> dict:
        """Kilo's config: one provider (the proxy) for the main and the small model, no title agent."""
        provider = {
            "npm": "@ai-sdk/openai-compatible",
            "name": "kwaigym proxy",
            "options": {
                "baseURL": f"{route.base_url}/v1",
                "apiKey": route.token,
                # slow policies: wait up to an hour for a model answer (defaults are minutes)
                "timeout": False,
                "headerTimeout": 3_600_000,
                "chunkTimeout": 3_600_000,
            },
            "models": {MODEL: {"name": MODEL}},
        }
        return {
            "provider": {PROVIDER: provider},
            "enabled_providers": [PROVIDER],
            "model": f"{PROVIDER}/{MODEL}",
            "small_model": f"{PROVIDER}/{MODEL}",
            "agent": {"title": {"disable": True}},
            "autoupdate": False,
            "share": "disabled",
        }

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "KILO_CONFIG_CONTENT": json.dumps(self.config(route)),
            "KILO_TELEMETRY_LEVEL": "off",  # PostHog; anything but "all" turns it off
            "KILO_DISABLE_AUTOUPDATE": "1",
            "KILO_DISABLE_MODELS_FETCH": "1",
            "KILO_DISABLE_LSP_DOWNLOAD": "1",
            "KILO_DISABLE_SHARE": "1",
            "KILO_DISABLE_SESSION_INGEST": "1",
            "KILO_DISABLE_DEFAULT_PLUGINS": "1",
            "KILO_NO_DAEMON": "1",
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("bash", call_id, command=command, description="Run a command")

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read ``--format json`` events: the last text part the model wrote is the final message
        (synthetic ones, such as the prompt that resumes after compaction, are not); error events
        (Kilo then exits 1) fail it."""
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
