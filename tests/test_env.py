"""The Gymnasium face with the real `mini` agent in real sandboxes: the gym loop, Gymnasium's own
checker (random actions included), the vector env with autoreset, and teardown on close."""

from __future__ import annotations

import json
import subprocess

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import kwaigym.env  # noqa: F401 - registers kwaigym/Agentic-v0
from kwaigym.datasets import load_dataset
from kwaigym.errors import ConfigError
from scaffolds import registry

pytestmark = pytest.mark.podman
MINI = registry.get("mini")


def fix_action(task_id: str):
    """The action that applies the task's reference patch with mini's bash tool."""
    task = load_dataset("examples").get(task_id)
    patch = task.path("solution/solution.patch").read_text()
    command = f"cd /workspace && git apply <<'KWAIGYM_EOF'\n{patch}KWAIGYM_EOF"
    return MINI.shell_call(command, "call_fix")


def kwaigym_containers(prefix: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Labels}}"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if f"io.kwaigym.episode:{prefix}" in line]


def test_gym_loop_solves_a_task_and_scores_it():
    env = gym.make("kwaigym/Agentic-v0", dataset="examples", scaffold="mini", task_id="swe-interval-merge")
    try:
        obs, info = env.reset(seed=1)
        request = json.loads(obs["request"])
        assert obs["call_id"] == "1" and obs["branch"] == "main" and info["task_id"] == "swe-interval-merge"
        assert request["tools"][0]["name"] == "bash" and "spans" in json.dumps(request["messages"])
        obs, reward, terminated, truncated, info = env.step(fix_action("swe-interval-merge"))
        assert (reward, terminated, obs["call_id"]) == (0.0, False, "2")
        assert "exit code 0" in obs["request"]  # the tool's result came back in the next request
        obs, reward, terminated, truncated, info = env.step("Fixed.")
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["status"] == "ok" and info["reward_valid"] and info["record"].turns == 2
        with pytest.raises(ConfigError, match="reset"):
            env.step("again")
    finally:
        env.close()


def test_gymnasium_checker_passes():
    """check_env: spaces, seeded reset, random actions (the agent just receives them), close."""
    env = gym.make("kwaigym/Agentic-v0", dataset="examples", task_id="swe-semver").unwrapped
    check_env(env, skip_render_check=True)
    env.close()


def test_vector_env_autoresets_over_one_runtime():
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("kwaigym/Agentic-v0", task_id="swe-text-wrap") for _ in range(2)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    try:
        obs, _ = envs.reset(seed=0)
        assert list(obs["call_id"]) == ["1", "1"]
        _, rewards, terminated, _, infos = envs.step(np.array(["no change", "no change"], dtype=object))
        assert list(terminated) == [True, True] and list(rewards) == [0.0, 0.0]
        assert list(infos["status"]) == ["ok", "ok"]
        obs, *_ = envs.step(np.array(["", ""], dtype=object))  # next-step autoreset: new episodes
        assert list(obs["call_id"]) == ["1", "1"]
        assert kwaigym.env.runtime().users == 2
    finally:
        envs.close()


def test_close_mid_episode_removes_its_sandbox():
    env = gym.make("kwaigym/Agentic-v0", task_id="swe-lru-cache")
    env.reset(seed=0)
    assert kwaigym_containers("swe-lru-cache-")
    env.close()
    assert kwaigym_containers("swe-lru-cache-") == []


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="no task"):
        gym.make("kwaigym/Agentic-v0", task_id="no-such-task")
    with pytest.raises(ConfigError, match="no scaffold named"):
        gym.make("kwaigym/Agentic-v0", scaffold="gpt-agent")


def test_claude_code_sub_agent_calls_are_their_own_branch():
    """Claude Code's Agent tool starts a sub-agent: its calls come as separate steps on branch
    `sub-agent:<its id>` (from Claude Code's own header), the main loop's as `main`."""
    from scaffolds.base import tool_call

    env = gym.make("kwaigym/Agentic-v0", scaffold="claude-code", task_id="organize-inbox")
    seen, sub_steps = [], 0
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(20):
            branch, request = obs["branch"], json.loads(obs["request"])
            seen.append(branch)
            answered = any(p.get("call_id") for m in request["messages"] for p in m["content"])
            if branch == "auxiliary":
                action = "ok"
            elif branch.startswith("sub-agent:"):
                sub_steps += 1
                write = tool_call("Bash", "sub_1", command="echo from-sub > /workspace/sub.txt")
                action = write if sub_steps == 1 else "The file is written."
            elif not answered:
                action = tool_call("Agent", "main_1", description="write a file", prompt="Write sub.txt",
                                   subagent_type="general-purpose")  # fmt: skip
            else:
                action = "Done."
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert terminated, seen
        record = info["record"]
    finally:
        env.close()
    subs = [b for b in seen if b.startswith("sub-agent:")]
    assert len(subs) == 2 and len(set(subs)) == 1, seen
    assert seen[0] == "main" and seen[-1] == "main"
    kinds = [(c.kind, c.agent_id) for c in record.calls if c.kind != "auxiliary"]
    assert {k for k, _ in kinds} == {"main", "sub-agent"} and f"sub-agent:{kinds[1][1]}" in subs
