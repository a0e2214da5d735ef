"""kwaigym: Gymnasium environments for agentic-coding RL.

Real coding agents run unmodified in podman sandboxes; their model calls are
intercepted and answered by your policy; a verifier scores the result. This
release holds the sandbox layer and the interception proxy:

    import asyncio
    from kwaigym import PodmanBackend, SandboxSpec, ImageStore

    async def main():
        async with PodmanBackend() as backend:
            image = await ImageStore(backend.service).base_image()
            async with backend.sandbox(SandboxSpec(image=image, episode_id="ep-1")) as sb:
                print((await sb.shell("python3 --version")).stdout)

    asyncio.run(main())

Importing kwaigym starts nothing, prints nothing and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kwaigym import errors

# Public names load on first use (PEP 562), so ``import kwaigym.errors`` on a training node without
# podman or mitmproxy installed (the reference trainer's GPU machines) imports neither.
_LAZY = {
    "kwaigym.chat": ("ChatRequest", "Completion", "Message", "ToolCall"),
    "kwaigym.datasets": ("Dataset", "TaskList", "load_dataset"),
    "kwaigym.proxy": (
        "CallRecord", "EpisodeRoute", "GymResponder", "InterceptionProxy", "ScriptedResponder",
        "UpstreamResponder",
    ),
    "kwaigym.sandbox": (
        "PROXY_HOST", "ExecResult", "Mount", "NetworkPolicy", "PodmanBackend", "PodmanSandbox",
        "PodmanService", "Resources", "Sandbox", "SandboxPool", "SandboxSpec",
    ),
    "kwaigym.sandbox.images": ("ImageStore",),
    "kwaigym.task": ("Environment", "ScaffoldRef", "Solution", "Task", "Tools", "VerifierSpec"),
    "kwaigym.validate": ("TaskValidation", "validate_tasks"),
    "kwaigym.verifiers": ("Attempt", "Verifier", "VerifierResult", "get_verifier", "verify"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'kwaigym' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from kwaigym.chat import ChatRequest, Completion, Message, ToolCall
    from kwaigym.datasets import Dataset, TaskList, load_dataset
    from kwaigym.proxy import (
        CallRecord,
        EpisodeRoute,
        GymResponder,
        InterceptionProxy,
        ScriptedResponder,
        UpstreamResponder,
    )
    from kwaigym.sandbox import (
        PROXY_HOST,
        ExecResult,
        Mount,
        NetworkPolicy,
        PodmanBackend,
        PodmanSandbox,
        PodmanService,
        Resources,
        Sandbox,
        SandboxPool,
        SandboxSpec,
    )
    from kwaigym.sandbox.images import ImageStore
    from kwaigym.task import Environment, ScaffoldRef, Solution, Task, Tools, VerifierSpec
    from kwaigym.validate import TaskValidation, validate_tasks
    from kwaigym.verifiers import Attempt, Verifier, VerifierResult, get_verifier, verify

__version__ = "0.1.0"

__all__ = [
    "PROXY_HOST",
    "CallRecord",
    "ChatRequest",
    "Completion",
    "EpisodeRoute",
    "GymResponder",
    "InterceptionProxy",
    "Message",
    "ScriptedResponder",
    "ToolCall",
    "UpstreamResponder",
    "ExecResult",
    "ImageStore",
    "Mount",
    "NetworkPolicy",
    "PodmanBackend",
    "PodmanSandbox",
    "PodmanService",
    "Resources",
    "Sandbox",
    "SandboxPool",
    "SandboxSpec",
    "Task",
    "Environment",
    "Tools",
    "ScaffoldRef",
    "VerifierSpec",
    "Solution",
    "Dataset",
    "TaskList",
    "load_dataset",
    "Attempt",
    "VerifierResult",
    "Verifier",
    "verify",
    "get_verifier",
    "validate_tasks",
    "TaskValidation",
    "__version__",
    "errors",
]
