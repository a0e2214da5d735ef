"""Replay: a recorded episode re-runs from its recorded answers; a changed scaffold input shows up
as a divergence at the call and message where it first differs."""

from __future__ import annotations

import json

import pytest

from kwaigym.datasets import load_dataset
from kwaigym.policies import Policy
from kwaigym.proxy import ScriptedResponder
from kwaigym.rollout import rollout
from kwaigym.trajectory import EpisodeStore

pytestmark = pytest.mark.podman
TASK = "swe-money-rounding"


def inline_fix(task, scaffold) -> Policy:
    """Apply the reference patch with the agent's tool, the patch inline (nothing staged beforehand)."""
    patch = task.path("solution/solution.patch").read_text()
    fix = scaffold.shell_call(f"cd /workspace && git apply <<'EOF'\n{patch}EOF", "call_fix")
    return Policy(ScriptedResponder([fix, "Fixed."]))


async def replay(task, directory, backend):
    (result,) = await rollout([task], ["mini"], f"replay:{directory}", backend=backend, show_progress=False)
    return result


async def test_replay_reproduces_and_localises_a_change(backend, tmp_path):
    task = load_dataset("examples").get(TASK)
    recorded = tmp_path / "recorded"
    (original,) = await rollout(
        [task], ["mini"], inline_fix, out=recorded, backend=backend, show_progress=False
    )
    assert original.reward == 1.0

    same = await replay(task, recorded, backend)
    assert (same.status, same.reward, same.turns) == ("ok", 1.0, 2)
    assert same.metadata["replay_divergences"] == []

    # Change what the recorded first answer ran: the replayed second request (its tool result) differs.
    (record,) = EpisodeStore(recorded).records()
    first = record["calls"][0]
    first["response_raw"] = json.loads(
        json.dumps(first["response_raw"]).replace("&&", "&& echo CHANGED &&", 1)
    )
    edited = tmp_path / "edited"
    EpisodeStore(edited).append(record)
    changed = await replay(task, edited, backend)
    (divergence,) = changed.metadata["replay_divergences"]
    assert divergence["call_number"] == 2 and divergence["branch"] == "main"
    assert "CHANGED" in divergence["replayed"] and "CHANGED" not in divergence["recorded"]
