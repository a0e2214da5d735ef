"""Typed errors of kwaigym, grouped by what the caller can do about them.

- ``InfraError``: the machinery failed (podman, images, the proxy). Retrying the
  episode is sensible; the policy is not to blame (``reward_valid`` is False).
- ``LimitExceeded``: the sandboxed work hit a resource limit (time, memory,
  processes, disk). The episode ends; the policy caused it.
- ``ConfigError``: bad input or misuse. Fix the call; retrying will not help.

Every error names the episode (or task) it belongs to when it knows it, and its
message says what happened, what was expected and what to do. Errors of podman,
mitmproxy and HTTP libraries are translated into these at one boundary each.
"""

from __future__ import annotations


class KwaigymError(Exception):
    """Root of every error kwaigym raises on purpose."""

    def __init__(self, message: str, *, episode_id: str | None = None, task_id: str | None = None):
        self.message = message
        self.episode_id = episode_id
        self.task_id = task_id
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.task_id:
            where.append(f"task {self.task_id}")
        if self.episode_id:
            where.append(f"episode {self.episode_id}")
        return f"[{', '.join(where)}] {self.message}" if where else self.message


# --- bad input / misuse ----------------------------------------------------------------------------


class ConfigError(KwaigymError, ValueError):
    """Bad input or a call that cannot work as written. Fix the call."""


class HostSetupError(ConfigError):
    """This machine cannot run sandboxes as configured (no podman, not root, other distro...)."""


# --- infrastructure: retryable, not the policy's fault -------------------------------------------


class InfraError(KwaigymError):
    """The machinery failed; the episode may be retried and its reward is not valid."""


class PodmanUnavailable(InfraError):
    """The podman API service could not be started or reached."""


class SandboxError(InfraError):
    """A sandbox could not be created, started, reached or removed."""


class SandboxGone(SandboxError):
    """The sandbox's container no longer exists or stopped (killed, reaped, wall time over)."""


class ImageError(InfraError):
    """An image could not be found, pulled, built or bootstrapped."""


# --- limits: the sandboxed work exceeded what the task allows --------------------------------------


class LimitExceeded(KwaigymError):
    """Sandboxed work exceeded a resource limit. ``result`` holds the partial output, if any."""

    def __init__(self, message: str, *, result=None, **where):
        self.result = result
        super().__init__(message, **where)


class SandboxTimeout(LimitExceeded):
    """A command ran past its timeout, or the sandbox past its wall time; its processes were killed."""


class SandboxOOM(LimitExceeded):
    """A process was killed by the kernel because the sandbox hit its memory limit."""


class SandboxPidsExceeded(LimitExceeded):
    """A process could not fork because the sandbox hit its process limit."""


class SandboxDiskFull(LimitExceeded):
    """The sandbox's writable workdir reached its size bound."""
