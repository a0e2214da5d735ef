"""Tree training: training step time of one tree forward/backward against its linearised branches.

For each prefix-sharing ratio r (path tokens / unique tokens) a tree is built with ``--branches``
leaves off one shared prefix, sized so that it holds ``--tokens`` unique tokens: a prefix of
fraction f = (r - 1) / (branches - 1) and equal suffixes. At r = 1 nothing is shared (a packed
forest of independent sequences). One training step is a forward and backward of the GRPO loss
over every branch plus an AdamW step, either

- linearised: every root-to-leaf path as its own sequence, batched into micro-batches of at
  most as many tokens as the tree holds (so both run forwards of the same size; causal SDPA), or
- tree: the DFS-flattened tree in one sequence (:mod:`reference_trainer.tree`: FlexAttention
  block mask on a GPU, a dense SDPA mask on the CPU), each path read back from it. Below a sharing
  ratio of 1.1 the rows run as a plain batch, as in the trainer (``TREE_MIN_SHARING``).

The tree is built from the token paths before the timing (it is data preparation, done on the CPU
while the GPU trains); ``build_s`` reports what building it once costs.

Both compute the same loss and gradients. The ideal speedup is r (the tokens each processes); the
measured one is linearised step time / tree step time, both timed in this run on the same model.
On a GPU the model is the Qwen2-0.5B shape in bfloat16 with 8192 unique tokens; on the CPU the
tiny preset with 512.

Under torchrun (one process per GPU) the model is sharded with FSDP2 as in the trainer (float32
master weights, bfloat16 compute) and every rank trains its own tree of the same shape; a step's
time is the slowest rank's. ``benchmarks/scaling.py`` runs it on 2 GPUs.

The last line of stdout is one JSON object: ``device``, ``model``, ``tokens``, ``branches``,
``world`` and ``ratios``, a list of
``{"ideal": r, "speedup": s, "tree_s": ..., "linear_s": ..., "build_s": ...}``.
Usage: python benchmarks/tree.py [--quick] [--tokens N] [--branches B] [--ratios 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from reference_trainer.losses import grpo_loss
from reference_trainer.model import load_model
from reference_trainer.parallelize import init_distributed, shard_model
from reference_trainer.rl import TREE_MIN_SHARING, token_logprobs
from reference_trainer.tree import FlatTree, gather_paths, tree_logprobs

TARGET = 0.8
"""Measured speedup at least this fraction of the ideal once the ideal is >= 2."""


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def branches_of(ratio: float, tokens: int, branches: int, vocab: int, seed: int) -> list[list[int]]:
    """``branches`` token paths sharing one prefix, with ``tokens`` unique tokens and the given ratio."""
    fraction = (ratio - 1) / (branches - 1)
    prefix = round(fraction * tokens)
    suffix = max(1, (tokens - prefix) // branches)
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, vocab, (prefix,), generator=g).tolist()
    # each suffix starts with its own token, so the paths diverge exactly where the prefix ends
    return [shared + [b % vocab] + torch.randint(0, vocab, (suffix - 1,), generator=g).tolist()
            for b in range(branches)]  # fmt: skip


def linear_step(model, paths, optimizer, device, budget: int) -> None:
    """Paths (all the same length here) in micro-batches of at most ``budget`` tokens."""
    n_tokens = sum(len(p) - 1 for p in paths)
    rows = max(1, budget // len(paths[0]))
    starts = range(0, len(paths), rows)
    for start in starts:
        if isinstance(model, FSDPModule):  # reduce gradients once, after the last micro-batch
            model.set_requires_gradient_sync(start == starts[-1])
        ids = torch.tensor(paths[start : start + rows], device=device)
        logp = token_logprobs(model, ids, None)
        adv = torch.tensor([1.0 if b % 2 else -1.0 for b in range(start, start + len(ids))], device=device)
        loss, _ = grpo_loss(logp, logp.detach(), adv, torch.ones_like(logp), num_tokens=n_tokens)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def tree_step(model, tree: FlatTree, ids_BT, optimizer, device) -> None:
    """The tree computed once, each path read back; a tree that shares (almost) nothing runs as the
    plain batch, as the trainer's ``tree=True`` path does (``TREE_MIN_SHARING``)."""
    if tree.sharing_ratio < TREE_MIN_SHARING:
        logp = token_logprobs(model, ids_BT, None)
    else:
        logp = gather_paths(tree, tree_logprobs(model, tree))
    adv = torch.tensor([1.0 if b % 2 else -1.0 for b in range(len(ids_BT))], device=device)
    loss, _ = grpo_loss(logp, logp.detach(), adv, torch.ones_like(logp), num_tokens=logp.numel())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(step, args, device) -> float:
    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = (time.perf_counter() - start) / args.steps
    if dist.is_initialized() and dist.get_world_size() > 1:  # the slowest rank sets the step time
        t = torch.tensor([elapsed], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        elapsed = float(t.item())
    return elapsed


def main(args) -> dict:
    gpu = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if gpu else torch.device("cpu")
    preset = "qwen2-0.5b" if gpu else "tiny-dense"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        mesh = init_distributed(device.type)
        model = shard_model(load_model(preset, device=device), mesh=mesh).train()
    else:
        model = load_model(preset, dtype=torch.bfloat16 if gpu else torch.float32, device=device).train()
    rank = dist.get_rank() if world > 1 else 0
    say = print if rank == 0 else lambda *a, **k: None
    fused = gpu
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7, fused=fused, foreach=not fused)
    out = {"device": torch.cuda.get_device_name() if gpu else "cpu", "model": preset, "tokens": args.tokens,
           "branches": args.branches, "world": world, "ratios": []}  # fmt: skip
    for ratio in args.ratios:
        paths = branches_of(
            ratio, args.tokens, args.branches, model.config.vocab_size, seed=int(ratio * 10) + 1000 * rank
        )
        tree = FlatTree.from_sequences([(p, [1] * len(p), [None] * len(p)) for p in paths]).to(device)
        step = lambda paths=paths: linear_step(model, paths, optimizer, device, args.tokens)  # noqa: E731
        linear_s = timed(step, args, device)
        ids = torch.tensor(paths, device=device)
        tree_s = timed(
            lambda tree=tree, ids=ids: tree_step(model, tree, ids, optimizer, device), args, device
        )
        started = time.perf_counter()
        FlatTree.from_sequences([(p, [1] * len(p), [None] * len(p)) for p in paths])
        build_s = time.perf_counter() - started
        row = {"ideal": round(tree.sharing_ratio, 3), "speedup": round(linear_s / tree_s, 3),
               "tree_s": round(tree_s, 4), "linear_s": round(linear_s, 4),
               "build_s": round(build_s, 4)}  # fmt: skip
        out["ratios"].append(row)
        say(f"ratio {row['ideal']:5.2f}: tree {tree_s * 1e3:8.1f} ms, linearised {linear_s * 1e3:8.1f} ms, "
              f"speedup {row['speedup']:.2f}x (ideal {row['ideal']:.2f}x)", flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer ratios and steps, under a minute")
    parser.add_argument("--tokens", type=int, help="unique tokens per tree (default 8192 GPU, 512 CPU)")
    parser.add_argument("--branches", type=int, default=16, help="leaves of each tree (default 16)")
    parser.add_argument("--ratios", help="comma-separated sharing ratios (default 1,2,4,6,8,10)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 2, quick 1)")
    cli = parser.parse_args()
    gpu = torch.cuda.is_available()
    cli.tokens = cli.tokens or (8192 if gpu else 512)
    default_ratios = "1,2,4,8" if cli.quick else "1,2,4,6,8,10"
    cli.ratios = [float(r) for r in (cli.ratios or default_ratios).split(",")]
    if cli.branches < 2 or any(not 1 <= r <= cli.branches for r in cli.ratios):
        raise SystemExit(f"need --branches >= 2 and ratios between 1 and the branch count ({cli.branches})")
    cli.steps = cli.steps or (2 if cli.quick else 5)
    cli.warmup = cli.warmup or (1 if cli.quick else 2)
    result = main(cli)
    if dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        raise SystemExit(0)
    rows = result["ratios"]
    meets = all(r["speedup"] >= TARGET * r["ideal"] for r in rows if r["ideal"] >= 2)
    never_slower = all(r["speedup"] >= 0.95 for r in rows if r["ideal"] < 1.05) or not any(
        r["ideal"] < 1.05 for r in rows
    )
    print(f"within {1 - TARGET:.0%} of the ideal from ratio 2: {'yes' if meets else 'NO'}; "
          f"not slower at ratio 1: {'yes' if never_slower else 'NO'}")  # fmt: skip
    print(json.dumps(result))
