"""Episodes end to end: a real sandbox, the real `mini` agent, the real proxy and verifier; every
way an episode can end gives exactly one record with its failure class."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from kwaigym import policies
from kwaigym.datasets import load_dataset
from kwaigym.episode import AGENT_ERROR, INFRA_ERROR, LIMIT, OK, VERIFIER_ERROR, Limits, run_episode
from kwaigym.proxy import InterceptionProxy, ScriptedResponder
from kwaigym.sandbox.images import ImageStore
from scaffolds import registry
from tests.conftest import episode

pytestmark = pytest.mark.podman


@pytest.fixture
async def world(backend, service, tmp_path):
    async with InterceptionProxy(confdir=tmp_path / "mitm") as proxy:
        yield {"proxy": proxy, "backend": backend, "images": ImageStore(service)}


def semver():
    return load_dataset("examples").get("swe-semver")


async def run(world, task, responder, **kw):
    return await run_episode(task, registry.get("mini"), responder, episode_id=episode("ep"), **world, **kw)


async def test_oracle_scores_one_and_null_zero(world):
    task = semver()
    oracle = policies.oracle(task, registry.get("mini"))
    solved = await run(world, task, oracle.responder, before_agent=oracle.before_agent)
    assert (solved.status, solved.reward, solved.reward_valid, solved.turns) == (OK, 1.0, True, 2), (
        solved.error
    )
    assert [c.kind for c in solved.calls] == ["main", "main"] and solved.verifier.details["tests"]
    idle = await run(world, task, policies.null(task, registry.get("mini")).responder)
    assert (idle.status, idle.reward, idle.reward_valid, idle.truncated) == (OK, 0.0, True, False)


async def test_turn_limit_truncates(world):
    """The call past max_turns ends the episode; it is still scored, and marked truncated."""
    task = semver()
    busy = ScriptedResponder(lambda req, ctx: registry.get("mini").shell_call("true", "c1"))
    result = await run(world, task, busy, limits=Limits(max_turns=3))
    assert (result.status, result.truncated, result.turns, result.reward_valid) == (LIMIT, True, 3, True)
    assert "turn limit of 3" in result.error


async def test_wall_time_limit_truncates(world):
    async def slow(req, ctx):
        await asyncio.sleep(30)
        return "late"

    result = await run(world, semver(), ScriptedResponder(slow), limits=Limits(wall_time_s=2))
    assert (result.status, result.truncated, result.reward_valid) == (LIMIT, True, True)
    assert result.duration_s < 25


async def test_agent_crash_is_an_agent_error(world):
    """A policy that fails every call makes `mini` exit 2 (model call failed): the agent's error,
    still scored (the reward is valid: the sandbox and verifier worked)."""

    def broken(req, ctx):
        raise RuntimeError("the policy server is down")

    result = await run(world, semver(), ScriptedResponder(broken))
    assert (result.status, result.reward, result.reward_valid, result.agent_exit_code) == (
        AGENT_ERROR,
        0.0,
        True,
        2,
    )
    assert "agent exited 2" in result.error and result.calls[0].status == 502


async def test_missing_image_is_an_infra_error(world):
    task = semver()
    broken = attrs.evolve(task, environment=attrs.evolve(task.environment, image="localhost/kwaigym/none:0"))
    result = await run(world, broken, ScriptedResponder(["done"]))
    assert (result.status, result.reward_valid, result.reward) == (INFRA_ERROR, False, 0.0)
    assert "none:0" in result.error


async def test_broken_verifier_is_a_verifier_error(world, tmp_path):
    task = semver()
    params = {**task.verifier.params, "test_command": "exit 3", "fail_to_pass": ["tests/x.py::nothing"]}
    broken = attrs.evolve(task, verifier=attrs.evolve(task.verifier, kind="swe", params=params, timeout_s=1))
    slow = {**params, "test_command": "sleep 30"}
    result = await run(world, attrs.evolve(broken, verifier=attrs.evolve(broken.verifier, params=slow)),
                       ScriptedResponder(["done"]))  # fmt: skip
    assert (result.status, result.reward_valid) == (VERIFIER_ERROR, False)
    assert result.error.startswith("verifier:")
