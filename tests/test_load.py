"""Many episodes at once through one proxy: each gets its own answers, and leaves no container.

The workload and its checks are ``benchmarks/load.py``'s (the load benchmark), at a smaller scale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import RUN_PREFIX

EPISODES = 24


def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
    spec = importlib.util.spec_from_file_location("kwaigym_benchmark_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load = _load_benchmark()


def test_the_check_catches_another_episodes_token():
    """A call filed under this episode but carrying another's token counts as misrouted."""
    from kwaigym.episode import EpisodeResult
    from kwaigym.proxy.recorder import CallRecord

    mine, theirs = load.token_of("a"), load.token_of("b")
    call = CallRecord(call_id="c1", episode_id="ep-a", format="openai-chat", path="/v1/chat/completions",
                      started_at=0.0, request_raw={"messages": [{"content": f"write `{theirs}`"}]},
                      status=200, response_raw={"content": mine})  # fmt: skip
    result = EpisodeResult(episode_id="ep-a", task_id="a", scaffold="mini", status="ok", reward=1.0,
                           reward_valid=True, calls=(call,))  # fmt: skip
    assert load.misrouting(result) == [f"call c1: the request carries ['{theirs}']"]


@pytest.mark.podman
async def test_concurrent_episodes_are_each_answered_for_themselves(backend, tmp_path):
    """24 episodes at once: all complete, none misrouted, none leaked."""
    prefix = f"{RUN_PREFIX}-load"
    tasks = load.make_tasks(tmp_path, EPISODES, prefix)
    out = await load.run_load(tasks, prefix, backend=backend)
    assert (out["episodes"], out["completed"], out["misrouted"], out["leaked"]) == (
        EPISODES,
        EPISODES,
        0,
        0,
    ), out
