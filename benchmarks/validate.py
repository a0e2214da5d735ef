"""Validation throughput: tasks per minute of ``kwaigym validate`` at concurrency 1 against 8.

Each task runs its reference solution and an empty attempt, each in a fresh sandbox with its
verifier; most of that is sandbox and test wall time, not CPU, so concurrency should pay even
on 2 cores. The task images are built (and cached) before anything is timed; both passes run
the same tasks in the same process, one after the other. The last line of stdout is one JSON
object: tasks, valid, tasks_per_min_c1, tasks_per_min_c8, speedup.
Usage: python benchmarks/validate.py [--quick] [--dataset PATH_OR_NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from rich.console import Console

from kwaigym.datasets import load_dataset
from kwaigym.sandbox import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.task_sandbox import task_image
from kwaigym.validate import render, validate_tasks

QUICK_TASKS = 8
TARGET = 2.5


async def main(args) -> dict:
    tasks = list(load_dataset(args.dataset))
    if args.quick:
        tasks = tasks[:: max(1, len(tasks) // QUICK_TASKS)][:QUICK_TASKS]  # every kind, spread out
    out: dict = {"tasks": len(tasks)}
    async with PodmanBackend(reap=False) as backend:
        images = ImageStore(backend.service)
        await asyncio.gather(*(task_image(t, images) for t in tasks))  # builds are not what is timed
        for concurrency in (1, 8):
            started = time.perf_counter()
            verdicts = await validate_tasks(tasks, concurrency=concurrency, backend=backend, images=images)
            minutes = (time.perf_counter() - started) / 60
            out[f"tasks_per_min_c{concurrency}"] = len(tasks) / minutes
            out["valid"] = min(out.get("valid", len(tasks)), sum(v.valid for v in verdicts))
            if concurrency == 8:
                Console().print(render(verdicts, title=f"validation at concurrency {concurrency}"))
    out["speedup"] = out["tasks_per_min_c8"] / out["tasks_per_min_c1"]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TASKS} tasks, under a minute")
    parser.add_argument("--dataset", default="examples", help="dataset to validate (default: examples)")
    cli = parser.parse_args()
    result = asyncio.run(main(cli))
    verdict = "meets" if result["speedup"] >= TARGET else "MISSES"
    print(f"concurrency 8 vs 1: {result['speedup']:.2f}x ({verdict} the {TARGET}x target); "
          f"{result['valid']}/{result['tasks']} valid")  # fmt: skip
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
