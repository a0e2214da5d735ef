"""Pipeline: wall time of each stage of the specialize-then-unify demo, and where an RL step's time goes.

Runs ``python -m reference_trainer pipeline`` on ``examples/pipeline/demo.toml`` (what
``make train-demo`` runs: two drills domains, a tiny model from scratch, on the CPU) in a fresh
directory, then reads what it wrote: each stage's wall time (``stages.json``), the pass-rate table
(``table.json``), and from every RL and OPD step's metrics the rollout time (episodes through
kwaigym) against the training time (the policy update), as shares of the step. ``--quick`` runs
one domain of two tasks with one step per stage (the plumbing, not the learning), in under a
minute on two cores.

The last line of stdout is one JSON object: ``wall_s`` (stage name -> seconds), ``total_s``,
``table`` (model -> domain -> ``pass_rate``, ``episodes``), ``comparisons`` (domain ->
``rl_vs_sft_z``, RL's gain over SFT in standard errors, and ``student_share``, the student's pass
rate over the best expert's), ``rl_steps`` (RL and OPD steps
measured), ``rollout_share`` and ``train_share`` (of those steps' summed time).
Usage: python benchmarks/pipeline.py [--quick] [--config FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference_trainer.pipeline import (  # noqa: E402
    Pipeline,
    PipelineConfig,
    comparisons,
    format_comparisons,
    format_table,
)

DEMO = ROOT / "examples" / "pipeline" / "demo.toml"
QUICK = {
    "model": "tiny-dense",
    "domains": [{"name": "files", "dataset": "drills", "tasks": ["files-notes", "files-todo"]}],
    "sft": {"epochs": 2},
    "rl": {"steps": 1, "group_size": 2, "max_new_tokens": 16},
    "opd": {"steps": 1, "group_size": 2, "max_new_tokens": 16},
    "eval": {"samples": 1, "max_new_tokens": 16},
}


def step_shares(out: Path) -> tuple[int, float, float]:
    """(steps, rollout share, training share) over every RL and OPD step's metrics in ``out``."""
    rollout = update = 0.0
    steps = 0
    for metrics in [*out.glob("rl/*/metrics.jsonl"), out / "opd" / "metrics.jsonl"]:
        if not metrics.is_file():
            continue
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            rollout += row.get("rollout_s", 0.0)
            update += row.get("update_s", 0.0) + row.get("teacher_s", 0.0)
            steps += 1
    total = rollout + update
    return steps, (rollout / total if total else 0.0), (update / total if total else 0.0)


def main(args) -> dict:
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kwaigym-pipeline-"))
    if args.quick:
        config = PipelineConfig.from_dict({**QUICK, "out": str(out)})
    else:
        config = attrs.evolve(PipelineConfig.from_toml(args.config), out=out)
    started = time.perf_counter()
    table = Pipeline(config, log=lambda line: print(line, flush=True)).run()
    total = time.perf_counter() - started
    stages = json.loads((out / "stages.json").read_text())
    steps, rollout_share, train_share = step_shares(out)
    print(format_table(table))
    print(format_comparisons(table))
    print(f"{steps} RL/OPD steps: rollout {rollout_share:.0%} of their time, training {train_share:.0%}")
    return {
        "wall_s": {name: stage["wall_s"] for name, stage in stages.items()},
        "total_s": round(total, 1),
        "table": table,
        "comparisons": comparisons(table),
        "rl_steps": steps,
        "rollout_share": round(rollout_share, 3),
        "train_share": round(train_share, 3),
        "out": str(out),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one small domain, one step a stage")
    parser.add_argument("--config", default=str(DEMO), help="pipeline TOML (default: the demo's)")
    parser.add_argument("--out", help="run directory (default: a fresh temporary one)")
    print(json.dumps(main(parser.parse_args())))
