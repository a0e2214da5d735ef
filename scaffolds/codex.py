"""The ``codex`` adapter: OpenAI's Codex CLI, black box.

The npm package's linux-x64 platform package ships a static (musl) native binary with
its resources (bubblewrap, ripgrep) beside it, so the bundle needs nothing from the
image, not even node. Headless: ``codex exec --skip-git-repo-check INSTRUCTION``.

Codex reads its provider from ``$CODEX_HOME/config.toml``; here everything comes from
``-c key=value`` overrides instead, so no file is written: a custom provider
``kwaigym`` speaking the Responses API (``wire_api = "responses"``, no WebSockets) at
the proxy, the key in the env var it names. The command line does not know the route,
so a small ``sh -c`` wrapper expands ``$KWAIGYM_BASE_URL`` into the override (the
instruction stays a separate argument, never quoted into the script). The podman
sandbox is the boundary: Codex's own command sandbox (bubblewrap/landlock) is bypassed.
Its shell tool is ``exec_command`` with a required string ``cmd``.
"""

from __future__ import annotations

from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import npm_bundle

VERSION = "0.171.0"
TRIPLE = "x86_64-unknown-linux-musl"
CODEX_HOME = "/root/.codex"  # not under /tmp: there Codex refuses its PATH helpers (apply_patch)
# $KWAIGYM_BASE_URL is only known at run time (env); "$@" is the rest of the codex argv.
_SCRIPT = (
    'mkdir -p "$CODEX_HOME" && '
    'exec "$0" exec -c "model_providers.kwaigym.base_url=\\"$KWAIGYM_BASE_URL\\"" "$@" </dev/null'
)

_OVERRIDES = {
    "model": '"rl-policy"',
    "model_provider": '"kwaigym"',
    "model_providers.kwaigym.name": '"kwaigym"',
    "model_providers.kwaigym.env_key": '"KWAIGYM_API_KEY"',
    "model_providers.kwaigym.wire_api": '"responses"',
    "model_providers.kwaigym.supports_websockets": "false",
    "model_providers.kwaigym.stream_idle_timeout_ms": "3600000",  # slow policies: up to an hour
    # the proxy retries its upstream itself; Codex's default (many retries) would re-ask the policy
    "model_providers.kwaigym.request_max_retries": "1",
    "model_providers.kwaigym.stream_max_retries": "1",
    "check_for_update_on_startup": "false",
}


class CodexScaffold:
    """Codex CLI, speaking the OpenAI Responses API."""

    name = "codex"
    wire_format = "openai-responses"
    target = f"{MOUNT_ROOT}/codex"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return npm_bundle("@openai/codex", self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        vendor = bundle / "node_modules" / "@openai" / "codex-linux-x64" / "vendor" / TRIPLE
        return [Mount(source=str(vendor), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        overrides = [arg for key, value in _OVERRIDES.items() for arg in ("-c", f"{key}={value}")]
        return [
            "sh",
            "-c",
            _SCRIPT,
            f"{self.target}/bin/codex",
            *overrides,
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--ephemeral",
            "--color",
            "never",
            "--",
            instruction,
        ]

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "KWAIGYM_BASE_URL": f"{route.base_url}/v1",  # Codex appends /responses
            "KWAIGYM_API_KEY": route.token,
            "CODEX_HOME": CODEX_HOME,
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("exec_command", call_id, cmd=command)

    def outcome(self, result: ExecResult) -> AgentOutcome:
        # `codex exec` prints only the final message on stdout; its progress goes to stderr.
        final = result.stdout.strip()
        ok = result.ok and bool(final)
        return AgentOutcome(exit_code=result.exit_code, final_message=final or result.output.strip(), ok=ok)
