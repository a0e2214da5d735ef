"""An append-only JSONL store of episode records: a crash loses no finished episode.

Each finished episode is one line, written with a single ``write`` on a file opened with
``O_APPEND`` and flushed to disk before the next episode is counted as done, so concurrent
writers in one process never interleave and a kill leaves at most one torn last line, which
reading skips. A write the disk cannot hold (a full disk makes it short) is cut back and raises
``OSError``, so the file never keeps half a record. A run that restarts reads the keys already
stored and does only the rest.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from kwaigym.errors import ConfigError
from kwaigym.proxy.recorder import CallRecord


def call_to_dict(call: CallRecord) -> dict[str, Any]:
    """A call as plain data: what went over the wire, its tags and timing (the normalised request
    and completion can be decoded again from the raw bodies with ``kwaigym.chat``)."""
    fields = ("call_id", "path", "format", "kind", "agent_id", "status", "stream", "started_at", "ttfb_s",
              "total_s", "error", "headers", "request_raw", "response_raw")  # fmt: skip
    out = {name: getattr(call, name) for name in fields}
    completion = call.completion
    if completion is not None:
        usage = completion.usage
        out["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
        out["prompt_token_ids"] = list(completion.prompt_token_ids) if completion.prompt_token_ids else None
        out["token_ids"] = list(completion.token_ids) if completion.token_ids else None
        out["logprobs"] = [t.logprob for t in completion.logprobs] if completion.logprobs else None
    return out


def episode_to_dict(result) -> dict[str, Any]:
    """An :class:`~kwaigym.episode.EpisodeResult` as one JSON-able record."""
    data = attrs.asdict(result, recurse=False)
    data["calls"] = [call_to_dict(c) for c in result.calls]
    verifier = result.verifier
    data["verifier"] = None if verifier is None else attrs.asdict(verifier)
    return data


class EpisodeStore:
    """``episodes.jsonl`` in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / "episodes.jsonl"
        self._lock = threading.Lock()  # appends run in worker threads; a failed one is cut back

    def recover(self) -> None:
        """Cut a torn last line (a write a kill interrupted), so that appends start on a clean line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, default=str) + "\n").encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                end = os.fstat(fd).st_size
                try:
                    # A full disk makes write() short, not failed: a torn line would stay behind
                    # (and the next append would glue a record onto it).
                    if (written := os.write(fd, line)) != len(line):
                        short = f"{os.strerror(errno.ENOSPC)}: wrote {written} of {len(line)} bytes"
                        raise OSError(errno.ENOSPC, short)
                    os.fsync(fd)
                except OSError as exc:
                    os.ftruncate(fd, end)  # the store stays whole: this episode is simply not done
                    raise OSError(
                        exc.errno,
                        f"cannot store the episode record in {self.path} ({exc.strerror or exc}); "
                        "nothing of it was kept: free space and rerun to resume",
                    ) from exc
            finally:
                os.close(fd)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, in the order written (a torn last line is skipped)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                if not raw.endswith(b"\n"):
                    return  # the write a kill interrupted: that episode is simply not done
                try:
                    yield json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(f"{self.path}:{number}: not a JSON record: {exc}") from None

    def done(self) -> set[tuple[str, str, int]]:
        """Keys ``(task_id, scaffold, sample)`` of the episodes already stored."""
        return {(r["task_id"], r["scaffold"], r.get("metadata", {}).get("sample", 0)) for r in self.records()}
