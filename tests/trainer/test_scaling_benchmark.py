"""benchmarks/scaling.py end to end on CPU processes (gloo): the trainer benchmark under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("transformers", reason="the trainer extra (transformers) is not installed")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


def scaling(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def test_one_and_two_processes_report_throughput_and_efficiency():
    """1 and 2 ranks at one global batch: each row has its figures; efficiency is N-rank over N x 1-rank."""
    done = scaling("--gpus", "1,2", "--micro", "2", "--steps", "1", "--warmup", "1", "--no-tree")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["config"] == "tiny" and out["global_batch"] == 2
    rows = {row["gpus"]: row for row in out["gpus"]}
    assert sorted(rows) == [1, 2] and out["tree_2gpu"] is None
    assert all(row["tokens_per_s"] > 0 and row["mfu"] > 0 for row in rows.values())
    assert rows[1]["efficiency"] == 1.0
    expected = rows[2]["tokens_per_s"] / (2 * rows[1]["tokens_per_s"])
    assert rows[2]["efficiency"] == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "2"], "need 1 in the list"),
        (["--gpus", "1,64"], "at most"),
        (["--gpus", "1,2", "--micro", "3"], "must divide"),
    ],
)
def test_bad_counts_are_refused_before_anything_runs(args, message):
    done = scaling(*args, timeout=60)
    assert done.returncode != 0 and message in done.stderr
