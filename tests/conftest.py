"""Shared fixtures: one real podman service per test process, the base image, and a leak check.

Every episode id a test uses starts with ``RUN_PREFIX`` (one per ``pytest`` run, shared by the
xdist workers through the environment), so the session-wide check at the end can tell this run's
containers from anyone else's: any left is a failure, and is removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid

import pytest

# kwaigym.sandbox is imported where it is used: the trainer's tests also run on GPU machines that
# have torch but neither podman nor its Python client.

RUN_PREFIX = os.environ.setdefault("KWAIGYM_TEST_RUN", f"t{uuid.uuid4().hex[:6]}")


def episode(name: str = "ep") -> str:
    """A unique episode id marked as belonging to this test run."""
    return f"{RUN_PREFIX}-{name}-{uuid.uuid4().hex[:6]}"


def _leftovers() -> list:
    from kwaigym.sandbox.reaper import list_sandboxes

    async def find():
        from kwaigym.sandbox.service import PodmanService

        async with PodmanService() as service:
            boxes = [b for b in await list_sandboxes(service) if b.episode_id.startswith(RUN_PREFIX)]
            from kwaigym.sandbox.podman import remove_container

            for box in boxes:
                await remove_container(service, box.id)
            return boxes

    return asyncio.run(find())


def pytest_sessionfinish(session, exitstatus):
    """After all workers finish: this run must have left no labelled container behind."""
    if hasattr(session.config, "workerinput") or shutil.which("podman") is None:
        return
    leaked = _leftovers()
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        names = ", ".join(f"{b.id[:12]} ({b.episode_id})" for b in leaked)
        print(f"\nLEAK CHECK FAILED: {len(leaked)} sandbox(es) left by this run, now removed: {names}")


@pytest.fixture(scope="session")
def service():
    """One private podman service for this test process."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: run `make test`, which sets the host up")
    from kwaigym.sandbox.service import PodmanService

    svc = PodmanService().start_sync()
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def base_image(service) -> str:
    """The Debian base image (bootstrapped and cached on first use)."""
    from kwaigym.sandbox.images import ImageStore

    return asyncio.run(ImageStore(service).base_image())


@pytest.fixture
async def backend(service):
    """A backend on the shared service; closing it removes whatever the test left open."""
    from kwaigym.sandbox import PodmanBackend

    be = PodmanBackend(service, reap=False)
    yield be
    await be.close()


@pytest.fixture
def spec(base_image):
    """A factory of sandbox specs on the base image with this run's episode ids."""

    from kwaigym.sandbox import SandboxSpec

    def make(**kwargs) -> SandboxSpec:
        kwargs.setdefault("image", base_image)
        kwargs.setdefault("episode_id", episode())
        return SandboxSpec(**kwargs)

    return make
