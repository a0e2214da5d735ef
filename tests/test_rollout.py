"""The rollout runner and its store: results land once each, a killed run resumes with nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kwaigym.datasets import load_dataset
from kwaigym.errors import ConfigError
from kwaigym.policies import Policy
from kwaigym.proxy import ScriptedResponder
from kwaigym.rollout import policy_factory, rollout
from kwaigym.trajectory import EpisodeStore

TASKS = ["swe-semver", "swe-text-wrap", "organize-inbox", "codegen-roman-numerals"]


def test_store_skips_a_torn_last_line_and_recovers(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append({"task_id": "a", "scaffold": "mini", "metadata": {"sample": 0}})
    with open(store.path, "ab") as f:
        f.write(b'{"task_id": "b", "scaff')  # a write cut by a kill
    assert store.done() == {("a", "mini", 0)}
    store.recover()
    store.append({"task_id": "c", "scaffold": "mini", "metadata": {"sample": 1}})
    assert [r["task_id"] for r in store.records()] == ["a", "c"]


def test_a_damaged_store_names_the_line(tmp_path):
    store = EpisodeStore(tmp_path)
    store.directory.mkdir(exist_ok=True)
    store.path.write_text('{"task_id": "a"}\nnot json\n')
    with pytest.raises(ConfigError, match="episodes.jsonl:2"):
        list(store.records())


def test_unknown_policy_is_refused():
    with pytest.raises(ConfigError, match="unknown policy 'gpt'"):
        policy_factory("gpt")


def make_scripted(argument: str):
    """A policy package's factory maker: answers every call with ``argument``."""
    return lambda task, scaffold: Policy(ScriptedResponder(lambda req, ctx: argument))


def test_packages_add_policies_by_entry_point(monkeypatch):
    """`name:argument` finds the maker a package registered under kwaigym.policies."""
    from importlib.metadata import EntryPoint

    import kwaigym.rollout

    point = EntryPoint(name="say", value="tests.test_rollout:make_scripted", group="kwaigym.policies")
    monkeypatch.setattr(
        kwaigym.rollout, "entry_points", lambda group: [point] if group == point.group else []
    )
    policy = policy_factory("say:hello")(None, None)
    assert policy.responder._fn(None, None) == "hello"


@pytest.mark.podman
async def test_null_policy_scores_zero_everywhere(backend, tmp_path):
    tasks = [load_dataset("examples").get(t) for t in TASKS]
    results = await rollout(tasks, ["mini"], "null", concurrency=4, out=tmp_path, backend=backend,
                            show_progress=False)  # fmt: skip
    assert sorted((r.task_id, r.status, r.reward, r.reward_valid) for r in results) == sorted(
        (t, "ok", 0.0, True) for t in TASKS
    )
    assert len(list(EpisodeStore(tmp_path).records())) == 4


@pytest.mark.podman
def test_killed_run_resumes_without_losing_or_repeating_episodes(tmp_path):
    """SIGKILL the eval after its first stored episode; the rerun does exactly the rest."""
    tasks = [t.id for t in load_dataset("examples")][:8]  # one at a time: the kill lands mid-run
    only = [arg for t in tasks for arg in ("--task", t)]
    cmd = [sys.executable, "-m", "kwaigym.cli", "eval", "--scaffold", "mini", "--policy", "oracle",
           "--concurrency", "1", "--out", str(tmp_path), *only]  # fmt: skip
    store = EpisodeStore(tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not store.done() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = store.done()
    assert 1 <= len(first) < len(tasks), first
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    records = list(store.records())
    keys = [(r["task_id"], r["scaffold"], r["metadata"]["sample"]) for r in records]
    assert sorted(keys) == sorted((t, "mini", 0) for t in tasks)  # each once: none lost, none repeated
    assert all(r["reward"] == 1.0 and r["status"] == "ok" for r in records)
    assert all(json.dumps(r["calls"]) and r["calls"][0]["kind"] == "main" for r in records)
