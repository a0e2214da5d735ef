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

from kwaigym import errors
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
