"""Rollout throughput: episodes per minute on the bundled dataset, at concurrency 1, 4 and 16,
through the rollout runner and through the Gymnasium vector env.

Every episode is real: a sandbox from the task's image, the `mini` agent, the proxy, the sealed
verifier. The oracle policy makes the agent apply the reference solution (two model calls), so
the figure is the machinery's throughput, not a model's; its pass rate must be 1 and the null
policy's 0. The passes run one after the other in one process (images built before timing).
The vector env pass drives 16 ``kwaigym/Agentic-v0`` envs in a ``SyncVectorEnv`` with the same
oracle actions. The last line of stdout is one JSON object with episodes_per_min_c1, _c4, _c16,
vector_episodes_per_min_c16, oracle_pass_rate, null_pass_rate and speedup_c16.
Usage: python benchmarks/rollout.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/scaffolds.py shares its name with the ``scaffolds`` package; keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import time

import gymnasium as gym
import numpy as np

import kwaigym.env  # noqa: F401 - registers kwaigym/Agentic-v0
from kwaigym.datasets import load_dataset
from kwaigym.rollout import rollout
from kwaigym.sandbox import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.task_sandbox import solution_command, task_image
from scaffolds import registry

TARGET = 4.0


async def rollouts(tasks, episodes: int) -> dict:
    """Episodes per minute of the rollout runner at 1, 4 and 16; oracle and null pass rates."""
    out = {}
    async with PodmanBackend(reap=False) as backend:
        await asyncio.gather(*(task_image(t, ImageStore(backend.service)) for t in tasks))
        for concurrency in (1, 4, 16):
            work = (tasks * (episodes // len(tasks) + 1))[:episodes] if concurrency > 1 else tasks
            started = time.perf_counter()
            results = await rollout(work, ["mini"], "oracle", concurrency=concurrency, samples=1,
                                    backend=backend, show_progress=False)  # fmt: skip
            out[f"episodes_per_min_c{concurrency}"] = len(results) / ((time.perf_counter() - started) / 60)
            passed = [r.reward >= 1.0 and r.reward_valid for r in results]
            out["oracle_pass_rate"] = min(out.get("oracle_pass_rate", 1.0), sum(passed) / len(passed))
        nulls = await rollout(tasks, ["mini"], "null", concurrency=16, backend=backend, show_progress=False)
        out["null_pass_rate"] = sum(r.reward >= 1.0 for r in nulls) / len(nulls)
    return out


def vector(tasks, episodes: int, n: int = 16) -> float:
    """Episodes per minute of n vector envs, each driven with the oracle's two actions."""
    mini, by_id = registry.get("mini"), {t.id: t for t in tasks}
    ids = [tasks[i % len(tasks)].id for i in range(n)]
    envs = gym.vector.SyncVectorEnv(
        [lambda tid=tid: gym.make("kwaigym/Agentic-v0", task_id=tid, stage_solution=True) for tid in ids],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    try:
        obs, _ = envs.reset(seed=0)
        started, finished = time.perf_counter(), 0
        while finished < episodes:
            actions = []
            for call_id, task_id in zip(obs["call_id"], obs["task_id"], strict=True):
                task = by_id[task_id]
                if call_id == "1":
                    actions.append(
                        mini.shell_call(f"cd {task.environment.workdir} && {solution_command(task)}", "c1")
                    )
                else:
                    actions.append("Done.")
            obs, _, terminated, truncated, _ = envs.step(np.array(actions, dtype=object))
            finished += int(np.sum(terminated | truncated))
        return finished / ((time.perf_counter() - started) / 60)
    finally:
        envs.close()


def main(quick: bool) -> dict:
    tasks = [t for t in load_dataset("examples") if t.solution and t.solution.script]
    if quick:
        tasks = tasks[::5]
    episodes = 6 if quick else 32
    out = asyncio.run(rollouts(tasks, episodes))
    out["vector_episodes_per_min_c16"] = vector(tasks, episodes, n=8 if quick else 16)
    out["speedup_c16"] = out["episodes_per_min_c16"] / out["episodes_per_min_c1"]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and envs")
    cli = parser.parse_args()
    result = main(cli.quick)
    verdict = "meets" if result["speedup_c16"] >= TARGET else "MISSES"
    rates = f"oracle pass rate {result['oracle_pass_rate']:.0%}, null {result['null_pass_rate']:.0%}"
    print(f"concurrency 16 vs 1: {result['speedup_c16']:.2f}x ({verdict} the {TARGET}x target); {rates}")
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
