"""The ``cline`` adapter: Cline's CLI, black box.

The npm package ``cline`` is a Node launcher (plus 280 MB of SDK packages it does not use)
for a self-contained native binary, Bun-compiled, in its platform package
``@cline/cli-linux-x64`` of the same version (it needs only glibc). The bundle is that
package alone (152 MB, a 4 s install), so the image needs no node.

Headless: ``cline --yolo --json INSTRUCTION`` with stdin at EOF. Yolo is Cline's mode for
unattended runs (its own evals use it): tools are auto-approved, the run stays in-process
(no background hub daemon), sub-agents and teams are off, the tools are ``read_files``,
``run_commands``, ``editor`` and ``submit_and_exit``, and a run ends only when the model
calls ``submit_and_exit``: a plain-text answer gets a reminder and the loop goes on, with
no iteration limit. ``run_commands`` kills a command after 30 s (hard-coded; its
description tells the model to background long jobs). In a git workspace with changes,
Cline snapshots them into ``refs/cline/checkpoints/<session>/<n>`` (working tree and index
untouched; always on).

Cline takes its provider's base URL only from a settings file, ``providers.json``; the
command's ``sh -c`` wrapper writes it, and ``global-settings.json`` (telemetry opt-out, no
auto-update), under ``$CLINE_DIR`` in /tmp from environment variables, then execs Cline
with the instruction as its own argument. The provider is ``openai-compatible`` (Chat
Completions) at the proxy's ``/v1``. ``E2E_TEST=true`` turns off its PostHog feature-flag
polling (its only use in this binary). So configured, it connects to nothing but the proxy.
"""

from __future__ import annotations

import json
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import npm_bundle

VERSION = "3.0.65"
WORKDIR = "/workspace"
CLINE_DIR = "/tmp/kwaigym-cline"  # Cline's state: settings, sessions, logs (data/logs/cline.log)
PROVIDER = "openai-compatible"
MODEL = "agent"  # the proxy's policy answers whatever model name the agent sends
#: Writes the two settings files from the environment, then runs Cline with stdin at EOF.
_WRAPPER = (
    'settings="$CLINE_DIR/data/settings" && mkdir -p "$settings"'
    ' && printf %s "$KWAIGYM_CLINE_PROVIDERS" > "$settings/providers.json"'
    ' && printf %s "$KWAIGYM_CLINE_SETTINGS" > "$settings/global-settings.json"'
    ' && exec "$@" </dev/null'
)


class ClineScaffold:
    """Cline, speaking the OpenAI Chat Completions API through its openai-compatible provider."""

    name = "cline"
    wire_format = "openai-chat"
    target = f"{MOUNT_ROOT}/cline"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return npm_bundle("@cline/cli-linux-x64", self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle / "node_modules" / "@cline" / "cli-linux-x64"), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        return ["sh", "-c", _WRAPPER, "cline", f"{self.target}/bin/cline", "--yolo", "--json",
                "--cwd", WORKDIR, "--provider", PROVIDER, "--model", MODEL, instruction]  # fmt: skip

    def providers(self, route: EpisodeRoute) -> dict:
        """Cline's ``providers.json``: one openai-compatible provider at the proxy."""
        settings = {
            "provider": PROVIDER,
            "model": MODEL,
            "baseUrl": f"{route.base_url}/v1",
            "apiKey": route.token,
            # slow policies: an hour for a model answer (3.0.65 sets no request timeout of its own for this
            # provider; a 330 s answer, the proxy sending keep-alives meanwhile, went through)
            "timeout": 3_600_000,
        }
        entry = {"settings": settings, "updatedAt": "2026-01-01T00:00:00.000Z", "tokenSource": "manual"}
        return {"version": 1, "lastUsedProvider": PROVIDER, "modes": {}, "providers": {PROVIDER: entry}}

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "KWAIGYM_CLINE_PROVIDERS": json.dumps(self.providers(route)),
            "KWAIGYM_CLINE_SETTINGS": json.dumps({"telemetryOptOut": True, "autoUpdateEnabled": False}),
            "CLINE_DIR": CLINE_DIR,
            "CLINE_NO_AUTO_UPDATE": "1",
            "E2E_TEST": "true",  # no PostHog feature-flag polling
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("run_commands", call_id, commands=[command])

    def finish(self, message: str, call_id: str) -> Completion:
        """In yolo mode a run ends only with ``submit_and_exit``."""
        return tool_call("submit_and_exit", call_id, summary=message, verified=True)

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read ``--json`` events: the ``run_result`` says whether the run completed and holds its text
        (the error, when it failed); a ``submit_and_exit`` summary is the final message of a completed run."""
        summary = run_result = None
        for line in result.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("type") == "run_result":
                run_result = event
            inner = event.get("event") if isinstance(event.get("event"), dict) else {}
            submitted = inner.get("input") if inner.get("toolName") == "submit_and_exit" else None
            if isinstance(submitted, dict) and "summary" in submitted:
                summary = str(submitted["summary"])
        if run_result is None:  # a crash, or killed before the end
            return AgentOutcome(exit_code=result.exit_code, final_message=result.output.strip(), ok=False)
        completed = run_result.get("finishReason") == "completed"
        message = summary if completed and summary is not None else str(run_result.get("text", ""))
        return AgentOutcome(exit_code=result.exit_code, final_message=message, ok=result.ok and completed)
