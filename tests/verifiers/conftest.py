"""Helpers of the verifier tests: throwaway tasks built in a temporary directory."""

from __future__ import annotations

from pathlib import Path

from kwaigym.task import Environment, Task, VerifierSpec


def task_of(kind: str, params: dict | None = None, *, root: Path | None = None, timeout_s: float = 60.0,
            instruction: str = "Do the thing.", task_id: str = "t-verify") -> Task:  # fmt: skip
    """A task scored by ``kind`` with ``params``, its files under ``root``, its project in /workspace."""
    return Task(
        id=task_id,
        instruction=instruction,
        environment=Environment(workdir="/workspace"),
        verifier=VerifierSpec(kind=kind, params=params or {}, timeout_s=timeout_s),
        root=str(root) if root else None,
    )


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``; return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
