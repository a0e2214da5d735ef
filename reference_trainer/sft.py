"""Supervised fine-tuning on kwaigym trajectories: the first stage of specialize-then-unify.

    python -m reference_trainer.sft --model tiny-dense --episodes runs/demo --out runs/sft --epochs 3

Any run directory of kwaigym episodes will do, whatever the scaffold and policy that made them (a
strong hosted model, the oracle): episodes with a valid reward of at least ``min_reward`` are
kept, each root-to-leaf path of their call trees becomes a sample with the same tokenisation and
loss mask as the RL data (:func:`reference_trainer.data.samples_from_episodes`: the loss covers
the assistant's own tokens only), and the loss is the mean negative log-likelihood of those tokens.

Packing: a batch is a forest of samples up to ``max_tokens`` unique tokens, run as one sequence
with the tree mask of :mod:`reference_trainer.tree`. Samples never see each other, each keeps its
own positions, and the paths of one episode share their common prefix, computed once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from kwaigym.errors import ConfigError, KwaigymError

if TYPE_CHECKING:
    import torch

    from reference_trainer.data import DataReport, Sample


@attrs.define
class SFTConfig:
    lr: float = 1e-5
    epochs: int = 1
    max_tokens: int = 8192
    """Unique tokens per packed batch (a longer sample is a batch of its own)."""
    min_reward: float = 1.0
    """Episodes kept: valid reward at least this."""
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    seed: int = 0

    def __attrs_post_init__(self):
        if not (self.lr > 0 and self.epochs >= 1 and self.max_tokens >= 2):
            raise ConfigError(
                f"SFTConfig: lr > 0, epochs >= 1 and max_tokens >= 2 needed; got lr={self.lr}, "
                f"epochs={self.epochs}, max_tokens={self.max_tokens}"
            )


def episode_order(record: dict[str, Any]) -> tuple:
    """A record's place in SFT data: by task, scaffold, sample and attempt (then id).

    A run directory lists episodes as they finished, which changes from run to run; packing, and so
    the trained model, would follow it (the demo's student started at 0.62 on one domain in one run
    and 0.95 in another, from the same episodes)."""
    meta = record.get("metadata") or {}
    return (str(record.get("task_id", "")), str(record.get("scaffold", "")), meta.get("sample", 0),
            meta.get("attempt", 0), str(record.get("episode_id", "")))  # fmt: skip


def sft_samples(
    records: Iterable[Any], tokenizer, *, min_reward: float = 1.0
) -> tuple[list[Sample], DataReport]:
    """Samples of the episodes whose reward is valid and at least ``min_reward``, in
    :func:`episode_order` (the same data trains the same model), and the data report."""
    from reference_trainer.data import samples_from_episodes

    def good(record) -> bool:
        reward = record.get("reward")
        return bool(record.get("reward_valid")) and reward is not None and reward >= min_reward

    kept = sorted((r for r in records if good(r)), key=episode_order)
    samples, report = samples_from_episodes(kept, tokenizer)
    return [s for s in samples if any(s.loss_mask)], report


def packed(samples: Sequence[Sample], max_tokens: int) -> list[list[Sample]]:
    """Samples in order, grouped so that each group holds at most ``max_tokens`` tokens (before sharing)."""
    groups: list[list[Sample]] = []
    size = 0
    for s in samples:
        if groups and size + len(s.input_ids) <= max_tokens:
            groups[-1].append(s)
            size += len(s.input_ids)
        else:
            groups.append([s])
            size = len(s.input_ids)
    return groups


def sft_loss(model, batch: Sequence[Sample]) -> tuple[torch.Tensor, int]:
    """Mean negative log-likelihood of the batch's loss-masked tokens, over its packed tree."""
    import torch

    from reference_trainer.tree import FlatTree, gather_paths, tree_logprobs

    tree = FlatTree.from_sequences([(s.input_ids, s.loss_mask, [None] * len(s.input_ids)) for s in batch])
    logp_PT = gather_paths(tree, tree_logprobs(model, tree))
    device = logp_PT.device
    mask_PT = torch.zeros_like(logp_PT)
    for p, s in enumerate(batch):  # column t holds the log-prob of token t + 1
        mask_PT[p, : len(s.input_ids) - 1] = torch.tensor(s.loss_mask[1:], dtype=mask_PT.dtype, device=device)
    count = int(mask_PT.sum())
    return -(logp_PT * mask_PT).sum() / max(count, 1), count


def train_sft(
    model, tokenizer, records: Iterable[Any], config: SFTConfig, *, log=print
) -> list[dict[str, float]]:
    """SFT ``model`` in place on ``records``; returns one metrics dict per optimizer step."""
    import torch

    samples, report = sft_samples(records, tokenizer, min_reward=config.min_reward)
    if not samples:
        raise ConfigError(
            f"SFT: no episode with a valid reward >= {config.min_reward} and a policy token to learn "
            f"from ({report.samples} samples seen); collect some with `kwaigym eval`, or lower min_reward"
        )
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = []
    model.train()
    try:
        for epoch in range(config.epochs):
            for batch in packed(samples, config.max_tokens):
                loss, count = sft_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for p in model.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf)
                optimizer.step()
                history.append({"epoch": epoch, "loss": float(loss.detach()), "tokens": count,
                                "samples": len(batch), "grad_norm": float(norm)})  # fmt: skip
                log(f"epoch {epoch}  loss {history[-1]['loss']:.4f}  tokens {count}  samples {len(batch)}")
    finally:
        model.eval()
    return history


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reference_trainer.sft``: SFT on a run directory, then an HF export to ``OUT/final``."""
    p = argparse.ArgumentParser(prog="python -m reference_trainer.sft", description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", required=True, help="model directory, or a preset (tiny-dense, tiny-moe ...)")
    p.add_argument("--episodes", required=True, nargs="+", help="run directories holding episodes.jsonl")
    p.add_argument("--out", required=True, help="where the trained model goes (OUT/final)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-tokens", type=int, default=8192, help="unique tokens per packed batch")
    p.add_argument("--min-reward", type=float, default=1.0, help="keep episodes scoring at least this")
    a = p.parse_args(argv)
    try:
        from transformers import AutoTokenizer

        from kwaigym.trajectory.store import EpisodeStore
        from reference_trainer.checkpoint import export_hf
        from reference_trainer.model import load_model
        from reference_trainer.train import model_dir

        config = SFTConfig(lr=a.lr, epochs=a.epochs, max_tokens=a.max_tokens, min_reward=a.min_reward)
        if missing := [d for d in a.episodes if not Path(d, "episodes.jsonl").is_file()]:
            raise ConfigError(
                f"SFT: no episodes.jsonl in {', '.join(missing)}: give run directories of kwaigym eval"
            )
        records = [r for d in a.episodes for r in EpisodeStore(d).records()]
        out = Path(a.out)
        path = model_dir(a.model, out)
        model, tokenizer = load_model(path), AutoTokenizer.from_pretrained(path)
        history = train_sft(model, tokenizer, records, config)
        final = export_hf(out / "final", model, tokenizer)
        (out / "sft_metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        print(f"SFT done: {len(history)} steps, model in {final} (use it as --model {final})")
    except KwaigymError as e:
        print(f"sft: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
