"""The ``openclaw`` adapter: OpenClaw (the personal-assistant agent with a gateway), black box.

OpenClaw is plain JavaScript (about 330 npm packages, 650 MB) that needs Node >= 24.16, so its
bundle goes with the portable Node runtime of :mod:`scaffolds.node`; the install runs npm with
that Node first on ``PATH``, because the package's install scripts refuse an older host Node.

Headless: ``openclaw agent exec INSTRUCTION --json``, the embedded one-shot mode meant for CI:
no gateway, a temporary state directory removed at exit, the ``coding`` tool profile with
``exec`` (its shell tool: a required string ``command``) auto-approved, file tools confined to
``--cwd``, and a stable JSON envelope on stdout (``ok``, ``status``, ``final``, ``error``).
Its provider comes from a config file, so a small ``sh -c`` wrapper writes the JSON that
:meth:`OpenClawScaffold.config` builds (one custom provider at the proxy; no update check,
telemetry or background skill review) from an env var to /tmp, then runs OpenClaw with the
instruction as its own argument. Sub-agents (``sessions_spawn``) need a gateway: in this mode
the tool is offered but fails, so every call is the main loop.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.errors import HostSetupError
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.node import NODE, node_mount, node_runtime
from scaffolds.npm import bundle_cache, cached_install

VERSION = "2026.9.6"
WORKDIR = "/workspace"
PROVIDER = "kwaigym"
MODEL = "agent"  # the proxy's policy answers whatever model name the agent sends
CONFIG = "/tmp/kwaigym-openclaw/openclaw.json"
#: OpenClaw's provider adapters we can point at the proxy, and the wire format each speaks.
APIS = {"openai-completions": "openai-chat", "anthropic-messages": "anthropic"}
# The config (with the token) is only known at run time: written from the env, then dropped from it.
_SCRIPT = (
    f'mkdir -p {os.path.dirname(CONFIG)} && printf %s "$KWAIGYM_OPENCLAW_CONFIG" > {CONFIG} && '
    'unset KWAIGYM_OPENCLAW_CONFIG && exec "$@" </dev/null'
)


class OpenClawScaffold:
    """OpenClaw's one-shot ``agent exec``, speaking OpenAI Chat Completions (or Anthropic Messages)."""

    name = "openclaw"
    target = f"{MOUNT_ROOT}/openclaw"

    def __init__(self, version: str = VERSION, *, api: str = "openai-completions",
                 context_window: int = 200_000, max_tokens: int = 32_000):  # fmt: skip
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        self.version, self.api = version, api
        self.wire_format = APIS[api]
        self.context_window, self.max_tokens = context_window, max_tokens

    def install(self) -> Path:
        npm = shutil.which("npm")
        if npm is None:
            raise HostSetupError(f"installing openclaw@{self.version} needs npm: apt-get install npm")
        path = f"{node_mount(node_runtime()).source}/bin:{os.environ.get('PATH', '')}"
        flags = ["--no-audit", "--no-fund", "--loglevel=error", f"openclaw@{self.version}"]
        return cached_install(
            bundle_cache(), f"openclaw-{self.version}", f"openclaw@{self.version}",
            lambda into: ["env", f"PATH={path}", npm, "install", "--prefix", str(into), *flags], 900,
        )  # fmt: skip

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle), target=self.target), node_mount(node_runtime())]

    def command(self, instruction: str) -> list[str]:
        entry = f"{self.target}/node_modules/openclaw/openclaw.mjs"
        return ["sh", "-c", _SCRIPT, "openclaw", NODE, entry, "agent", "exec", "--config", CONFIG,
                "--cwd", WORKDIR, "--json", "--timeout", "0", "--", instruction]  # fmt: skip

    def config(self, route: EpisodeRoute) -> dict:
        """OpenClaw's config: one provider (the proxy) as the only model; nothing that phones home."""
        model = {"id": MODEL, "name": MODEL, "reasoning": False, "input": ["text"],
                 "contextWindow": self.context_window, "maxTokens": self.max_tokens}  # fmt: skip
        provider = {
            "baseUrl": f"{route.base_url}/v1" if self.api.startswith("openai") else route.base_url,
            "apiKey": route.token,
            "api": self.api,
            "timeoutSeconds": 3600,  # slow policies: request and stream-idle timeout of up to an hour
            "models": [model],
        }
        return {
            "models": {"mode": "replace", "providers": {PROVIDER: provider}},
            "agents": {"defaults": {"model": {"primary": f"{PROVIDER}/{MODEL}"}}},
            "update": {"checkOnStart": False},
            "telemetry": {"enabled": False},
            "skills": {"workshop": {"autonomous": {"mode": "off"}}},  # no background skill-review calls
        }

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "KWAIGYM_OPENCLAW_CONFIG": json.dumps(self.config(route)),
            "HOME": "/root",
            "OPENCLAW_NO_AUTO_UPDATE": "1",
            "DO_NOT_TRACK": "1",
            "OPENCLAW_OFFLINE": "1",  # never download its fd/ripgrep helpers
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "NO_COLOR": "1",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("exec", call_id, command=command)

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read the ``--json`` envelope: ``final`` is the final message; ``ok: false`` (or none) fails."""
        try:
            report = json.loads(result.stdout)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            return AgentOutcome(exit_code=result.exit_code, final_message=result.output.strip(), ok=False)
        error = report.get("error") if isinstance(report.get("error"), dict) else {}
        message = str(report.get("final") or error.get("message") or "").strip()
        ok = result.ok and report.get("ok") is True
        return AgentOutcome(exit_code=result.exit_code, final_message=message, ok=ok)
