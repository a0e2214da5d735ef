"""What a scaffold adapter declares: how to install the agent, run it, point it at the proxy.

An adapter is configuration, not code paths in the core: where its bundle comes from
(installed once on the host, mounted read-only into any dataset image), the headless
command line for an instruction, the environment that points it at the interception
proxy with the episode's token, the wire format it speaks, and how to say "run this
shell command" in its own tool protocol (scripted and oracle policies use that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from kwaigym.chat.types import Completion, ToolCall, WireFormat
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount

#: Where a scaffold's bundle is mounted inside a sandbox.
MOUNT_ROOT = "/opt/kwaigym/scaffolds"


@attrs.frozen(kw_only=True)
class AgentOutcome:
    """How an agent run ended, as the adapter reads it."""

    exit_code: int
    final_message: str
    ok: bool


@runtime_checkable
class Scaffold(Protocol):
    """A coding agent kwaigym can run in a sandbox (see the module docstring)."""

    name: str
    wire_format: WireFormat

    def install(self) -> Path:
        """Build the bundle once on this host (cached by version); return its directory."""

    def mounts(self, bundle: Path) -> list[Mount]:
        """Read-only mounts that deploy the bundle into a sandbox."""

    def command(self, instruction: str) -> list[str]:
        """The headless command line that runs the agent on ``instruction``."""

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        """Environment that points the agent at the proxy with the episode's token."""

    def shell_call(self, command: str, call_id: str) -> Completion:
        """A completion that makes this agent run ``command`` with its own shell tool."""

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read the agent's exit status and final message from its run."""


def finish_call(scaffold: Scaffold, message: str, call_id: str) -> Completion:
    """The completion that ends ``scaffold``'s run: plain text for most agents; an adapter whose
    agent ends otherwise (e.g. mini-swe-agent's submit command) defines ``finish(message, call_id)``."""
    finish = getattr(scaffold, "finish", None)
    return finish(message, call_id) if finish else Completion(text=message)


def tool_call(name: str, call_id: str, **arguments) -> Completion:
    """A completion calling one tool with JSON arguments."""
    return Completion(tool_calls=[ToolCall(id=call_id, name=name, arguments=json.dumps(arguments))])
