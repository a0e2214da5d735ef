"""The reference RL loop against kwaigym: roll out, train, checkpoint, repeat; metrics to TensorBoard.

    kwaigym-train --model tiny-dense --dataset examples --tasks swe-semver,organize-inbox \\
        --steps 4 --group-size 4 --out runs/train

Each step (:func:`reference_trainer.rl.rl_step`) rolls out ``group_size`` episodes of each of the
step's tasks through kwaigym's rollout runner, the local engine answering every model call, then
takes one policy-gradient step on them. The engine samples from the very model the optimizer
updates, so the next step's rollouts come from the new weights with no copy (a served engine,
:mod:`reference_trainer.engine.server`, shares the same object).

What lands in ``--out``:

- ``initial/``: the starting model directory when ``--model`` is a preset (random weights, the
  byte-level tokenizer of :mod:`reference_trainer.tokenizer`);
- ``metrics.jsonl``: one line per step (reward, pass rate, KL between rollout and trainer, clip
  fraction, IcePop mask fraction, tokens/s, data checks ...), also written to TensorBoard under
  ``tensorboard/`` (``tensorboard --logdir OUT/tensorboard``);
- ``checkpoints/step_NNNNNN/``: model and optimizer (:mod:`reference_trainer.checkpoint`) every
  ``--save-every`` steps and at the end. Running the same command again resumes from the newest
  one and does only the steps that are left;
- ``final/``: the trained model as a Hugging Face safetensors directory (``--policy local:OUT/final``).

Limits: one process (the FSDP2 path of :mod:`reference_trainer.parallelize` serves multi-GPU
training, this loop does not launch it); the engine's sampling RNG is reseeded from ``--seed`` and
the step on resume, not restored bit for bit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from kwaigym.errors import ConfigError, KwaigymError
from kwaigym.interrupt import sigterm_as_interrupt
from reference_trainer.rl import RLConfig

if TYPE_CHECKING:
    from kwaigym.task import Task

SHOWN = ("reward_mean", "pass_rate", "loss", "kl_rollout", "clip_frac", "icepop_masked_frac",
         "policy_tokens", "train_tokens_per_s", "rollout_s")  # fmt: skip
"""The metrics printed per step (every metric goes to ``metrics.jsonl`` and TensorBoard)."""


@attrs.define
class TrainConfig:
    model: str
    """A local Hugging Face model directory, or a preset of :mod:`reference_trainer.model`."""
    out: Path = attrs.field(converter=Path)
    dataset: str = "examples"
    tasks: tuple[str, ...] = ()
    """Task ids of the dataset to train on; empty: all of them."""
    tasks_per_step: int = 0
    """Tasks per step, taken in turn from ``tasks``; 0: every task every step."""
    steps: int = 1
    save_every: int = 0
    """Checkpoint every N steps (0: only after the last step)."""
    rl: RLConfig = attrs.Factory(RLConfig)

    def __attrs_post_init__(self):
        if self.steps < 1 or self.save_every < 0 or self.tasks_per_step < 0:
            raise ConfigError(
                f"train: steps must be >= 1 and save_every, tasks_per_step >= 0; got steps={self.steps}, "
                f"save_every={self.save_every}, tasks_per_step={self.tasks_per_step}"
            )


def select_tasks(config: TrainConfig) -> list[Task]:
    """The dataset's tasks named in ``config.tasks`` (all when empty), in a fixed order."""
    from kwaigym.datasets import load_dataset

    dataset = load_dataset(config.dataset)
    if not config.tasks:
        return sorted(dataset, key=lambda t: t.id)
    known = {t.id for t in dataset}
    if missing := [t for t in config.tasks if t not in known]:
        raise ConfigError(
            f"train: dataset {config.dataset!r} has no task {', '.join(map(repr, missing))}; "
            f"it has {len(known)}, e.g. {', '.join(sorted(known)[:5])}"
        )
    return [dataset.get(t) for t in config.tasks]


def tasks_for_step(tasks: Sequence[Task], step: int, per_step: int) -> list[Task]:
    """Step ``step``'s tasks: a window of ``per_step`` that moves round ``tasks`` (all when 0)."""
    if per_step == 0 or per_step >= len(tasks):
        return list(tasks)
    start = step * per_step
    return [tasks[(start + i) % len(tasks)] for i in range(per_step)]


def model_dir(model: str, out: Path, *, seed: int = 0) -> Path:
    """``model`` when it is a directory; a preset is written once to ``out/initial``."""
    from reference_trainer.model import PRESETS
    from reference_trainer.tokenizer import build_model_dir

    if model not in PRESETS:
        if not Path(model, "config.json").is_file():
            raise ConfigError(
                f"--model {model!r} is neither a model directory (no config.json) "
                f"nor a preset ({', '.join(PRESETS)})"
            )
        return Path(model)
    initial = out / "initial"
    if not (initial / "config.json").is_file():
        build_model_dir(initial, model, seed=seed)
    return initial


class MetricsLog:
    """One JSON line per step in ``metrics.jsonl`` plus TensorBoard scalars (``tensorboard/``)."""

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.path = out / "metrics.jsonl"
        self.writer = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


async def train(
    config: TrainConfig,
    *,
    backend=None,
    console=None,
    tasks: Sequence[Task] | None = None,
    teacher_for=None,
    scaffold_for=None,
) -> list[dict[str, Any]]:
    """Run the loop (see the module docstring); returns the metrics of the steps run now.

    ``backend`` is a :class:`~kwaigym.sandbox.PodmanBackend` to share (default: the rollout
    runner's own). Resumes from the newest checkpoint under ``out/checkpoints``. ``tasks`` replaces
    the dataset selection (tasks of several datasets); ``teacher_for`` and ``scaffold_for`` go to
    :func:`~reference_trainer.rl.rl_step` (On-Policy Distillation, one agent per domain).
    """
    import torch
    from rich.console import Console

    from reference_trainer.checkpoint import export_hf, latest_checkpoint, load_checkpoint, save_checkpoint
    from reference_trainer.rl import make_trainer, rl_step

    console = console or Console(stderr=True)
    tasks = list(tasks) if tasks is not None else select_tasks(config)
    config.out.mkdir(parents=True, exist_ok=True)
    engine, optimizer = make_trainer(model_dir(config.model, config.out, seed=config.rl.seed), config.rl)
    checkpoints = config.out / "checkpoints"
    done = 0
    if latest := latest_checkpoint(checkpoints):
        done = load_checkpoint(latest, engine.model, optimizer)["step"]
        console.print(f"resuming from {latest} (step {done} of {config.steps})")
    log = MetricsLog(config.out)
    history = []
    try:
        for step in range(done + 1, config.steps + 1):
            engine.generator.manual_seed(config.rl.seed * 1_000_003 + step)
            chosen = tasks_for_step(tasks, step - 1, config.tasks_per_step)
            metrics = await rl_step(engine, chosen, config.rl, backend=backend, optimizer=optimizer,
                                    teacher_for=teacher_for, scaffold_for=scaffold_for)  # fmt: skip
            log.write(step, metrics)
            history.append({"step": step, **metrics})
            shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in SHOWN if k in metrics)
            console.print(f"step {step}/{config.steps}  {shown}")
            if step == config.steps or (config.save_every and step % config.save_every == 0):
                save_checkpoint(checkpoints, engine.model, optimizer, step=step)
    finally:
        log.close()
    with torch.no_grad():
        final = export_hf(config.out / "final", engine.model, engine.tokenizer)
    console.print(f"trained model: {final} (use it as --policy local:{final})")
    return history


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    from reference_trainer.rl import LOSSES

    p = argparse.ArgumentParser(prog="kwaigym-train", description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", required=True, help="model directory, or a preset (tiny-dense, tiny-moe ...)")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds checkpoints)")
    p.add_argument("--dataset", default="examples", help="kwaigym dataset name or path (default: examples)")
    p.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    p.add_argument("--tasks-per-step", type=int, default=0, help="tasks per step, in turn (0: all)")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument("--scaffold", default="mini", help="agent running every episode (default: mini)")
    p.add_argument("--group-size", type=int, default=4, help="episodes per task per step")
    p.add_argument("--concurrency", type=int, default=4, help="episodes at once")
    p.add_argument("--loss", choices=LOSSES, default="turn_gspo")
    p.add_argument("--turn-ratio", choices=("mean", "sum"), default="mean")
    p.add_argument("--advantage", choices=("grpo", "dr_grpo", "reinforce"), default="grpo",
                   help="advantage estimator (reinforce: the reward itself, no baseline)")  # fmt: skip
    p.add_argument("--updates", type=int, default=1, help="optimizer steps per rollout batch (PPO epochs)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--mcla-k", type=int, default=1, help="prefills averaged for IcePop's old log-probs")
    p.add_argument("--tree", action="store_true", help="tree training: shared prefixes computed once")
    p.add_argument("--max-new-tokens", type=int, default=512, help="per model call")
    p.add_argument("--sample-threads", type=int, default=None,
                   help="torch threads while sampling (default: torch's; 1 on a small CPU box)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rl = RLConfig(group_size=a.group_size, lr=a.lr, loss=a.loss, turn_ratio=a.turn_ratio,
                  seed=a.seed, max_new_tokens=a.max_new_tokens, scaffold=a.scaffold,
                  concurrency=a.concurrency, mcla_k=a.mcla_k, tree=a.tree, advantage=a.advantage,
                  updates=a.updates, sample_threads=a.sample_threads)  # fmt: skip
    tasks = tuple(t for t in a.tasks.split(",") if t)
    return TrainConfig(model=a.model, out=a.out, dataset=a.dataset, tasks=tasks,
                       tasks_per_step=a.tasks_per_step, steps=a.steps, save_every=a.save_every,
                       rl=rl)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    sigterm_as_interrupt()
    try:
        config = parse_args(argv)
        asyncio.run(train(config))
    except KwaigymError as e:
        print(f"kwaigym-train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the episodes in flight were cleaned up
        print("kwaigym-train: interrupted; run it again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
