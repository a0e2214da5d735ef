"""Removing what crashed runs left behind.

Every container kwaigym starts carries labels: ``io.kwaigym``, the episode id,
its owner (host/pid/process start time) and a deadline. A container is a
leftover when its owner process on this host no longer runs, or when its
deadline has passed (whatever host it came from). Sandboxes also end by
themselves at their deadline, so the reaper is the second line of defence, run
once when a backend starts and by ``kwaigym sandbox prune``.
"""

from __future__ import annotations

import logging
import os
import time

import attrs

from kwaigym.sandbox.base import LABEL, LABEL_DEADLINE, LABEL_EPISODE, LABEL_OWNER
from kwaigym.sandbox.podman import remove_container
from kwaigym.sandbox.service import PodmanService

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Identifies this process across pid reuse: host, pid and the process's start time."""
    with open("/proc/self/stat") as f:
        start_ticks = f.read().rsplit(")", 1)[1].split()[19]
    return f"{os.uname().nodename}/{os.getpid()}/{start_ticks}"


@attrs.frozen
class Leftover:
    """A labelled container and why it is (or is not) a leftover."""

    id: str
    episode_id: str
    owner: str
    reason: str | None
    """Why it should go; None while its owner is alive and its deadline ahead."""


def owner_alive(owner: str, *, hostname: str | None = None) -> bool:
    """True unless ``owner`` names a process on this host that is gone (or was replaced)."""
    try:
        host, pid, start_ticks = owner.split("/")
    except ValueError:
        return False
    if host != (hostname or os.uname().nodename):
        return True  # another host's process: only its deadline can tell
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19] == start_ticks
    except (OSError, ValueError, IndexError):
        return False


def classify(labels: dict[str, str], *, now: float | None = None) -> str | None:
    """The reason a container with these labels is a leftover, or None."""
    now = time.time() if now is None else now
    deadline = labels.get(LABEL_DEADLINE, "")
    if deadline.isdigit() and int(deadline) < now:
        return "deadline passed"
    if not owner_alive(labels.get(LABEL_OWNER, "")):
        return "owner process gone"
    return None


async def list_sandboxes(service: PodmanService) -> list[Leftover]:
    """Every kwaigym container on this service, with the reason to remove it, if any."""
    containers = await service.call(service.client.containers.list, all=True, filters={"label": LABEL})
    return [
        Leftover(
            id=c.id,
            episode_id=c.labels.get(LABEL_EPISODE, "?"),
            owner=c.labels.get(LABEL_OWNER, "?"),
            reason=classify(c.labels),
        )
        for c in containers
    ]


async def prune(service: PodmanService, *, everything: bool = False) -> list[Leftover]:
    """Remove leftovers (or, with ``everything``, every kwaigym container); return what was removed."""
    removed = []
    for box in await list_sandboxes(service):
        if everything or box.reason:
            await remove_container(service, box.id)
            log.info(
                "removed sandbox %s of episode %s (%s)", box.id[:12], box.episode_id, box.reason or "all"
            )
            removed.append(box)
    return removed
