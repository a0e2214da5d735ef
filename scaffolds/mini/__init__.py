"""The ``mini`` adapter: kwaigym's own bash-only agent (``agent.py`` beside this file).

Its bundle is this directory itself: nothing to install, mounted read-only; the image
needs python3 and bash.
"""

from __future__ import annotations

from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call

HERE = Path(__file__).resolve().parent


class MiniScaffold:
    """kwaigym's bash-only agent, OpenAI chat format; the default scaffold."""

    name = "mini"
    wire_format = "openai-chat"
    target = f"{MOUNT_ROOT}/mini"

    def install(self) -> Path:
        return HERE

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        return ["python3", f"{self.target}/agent.py", instruction]

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {"KWAIGYM_BASE_URL": f"{route.base_url}/v1", "KWAIGYM_API_KEY": route.token}

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("bash", call_id, command=command)

    def outcome(self, result: ExecResult) -> AgentOutcome:
        return AgentOutcome(exit_code=result.exit_code, final_message=result.stdout.strip(), ok=result.ok)
