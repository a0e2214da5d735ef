"""Isolated sandboxes for episodes: the protocol and the podman backend.

from kwaigym.sandbox import PodmanBackend, SandboxSpec

async with PodmanBackend() as backend:
    async with backend.sandbox(SandboxSpec(image=image, episode_id="ep-1")) as sb:
        print((await sb.shell("cd /tmp && pwd")).stdout)
"""

from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.base import (
    PROXY_HOST,
    ExecResult,
    Mount,
    NetworkPolicy,
    Resources,
    Sandbox,
    SandboxSpec,
)
from kwaigym.sandbox.podman import PodmanSandbox
from kwaigym.sandbox.pool import SandboxPool
from kwaigym.sandbox.service import PodmanService

__all__ = [
    "PROXY_HOST",
    "ExecResult",
    "Mount",
    "NetworkPolicy",
    "PodmanBackend",
    "PodmanSandbox",
    "PodmanService",
    "Resources",
    "Sandbox",
    "SandboxPool",
    "SandboxSpec",
]
