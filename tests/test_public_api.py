"""The public surface is pinned, and importing kwaigym does nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import kwaigym


def test_public_api_is_pinned():
    """Adding or removing a public name is a deliberate change to this list."""
    assert sorted(kwaigym.__all__) == sorted(
        [
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
    )
    for name in kwaigym.__all__:
        assert hasattr(kwaigym, name), name


def test_import_is_quiet_and_light():
    """`import kwaigym` prints nothing and pulls in neither torch, podman-py, mitmproxy nor httpx."""
    code = (
        "import sys, kwaigym; "
        "print(sorted(m for m in ('torch', 'podman', 'mitmproxy', 'requests', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n" and out.stderr == ""


def test_errors_name_the_episode_and_group_by_action():
    """Errors carry their episode/task, and limits, infra and config errors are distinct roots."""
    from kwaigym.errors import ConfigError, InfraError, LimitExceeded, SandboxOOM, SandboxTimeout

    err = SandboxTimeout("took too long", episode_id="ep-9", task_id="t-1")
    assert str(err) == "[task t-1, episode ep-9] took too long"
    assert isinstance(err, LimitExceeded) and not isinstance(err, InfraError)
    assert issubclass(ConfigError, ValueError) and not issubclass(SandboxOOM, InfraError)
