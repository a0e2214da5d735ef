"""Trainer throughput: training tokens/s and MFU of the reference trainer's step against a plain one.

A training step here is what :mod:`reference_trainer.rl` does per batch: ``micro_batches`` forward
and backward passes of one ``seq_len``-token sequence each (token log-probs over the whole
vocabulary, then the GRPO loss), then one AdamW step. Two ways of running it on the same model, in
the same process, one after the other:

- baseline: the plain Hugging Face model, eager, with parameters in the compute dtype (bfloat16 on
  a GPU) and no FSDP;
- trainer: the reference trainer's path, :func:`~reference_trainer.parallelize.shard_model` (FSDP2
  with float32 master weights, bfloat16 compute and float32 gradient reduction on a GPU), with each
  decoder block and the log-prob head compiled (``--no-compile`` to turn that off; ``--eager-too``
  adds the eager FSDP path). Gradients are reduced once per step, after the last micro-batch.

Under torchrun (one process per GPU) only the trainer path runs: ``--micro`` is the global batch,
split evenly over the ranks (the same tokens per optimizer step on any number of GPUs), the rate
counts every rank's tokens, MFU is over all the GPUs' peak and the peak memory is the largest of
any rank. ``benchmarks/scaling.py`` runs this on 1, 2, ... GPUs and reports the scaling efficiency.

On a GPU the configs are random-weight models of the shapes of Qwen2-0.5B and Qwen2-1.5B at 8192
tokens per sequence; without one, a tiny model at 512 tokens (CPU figures say little about a GPU).
MFU is model FLOPs per second over the device's peak: 6 FLOPs per parameter of every matmul (LM
head included, embedding lookup excluded) per token, plus causal attention's 6 * layers * seq_len *
attention width per token; activation recomputation is not counted. The peak is the datasheet's
dense bfloat16 figure for H100/H200 (989 TFLOP/s); elsewhere it is a large matmul measured in the
same run, also reported on a GPU as ``matmul_tflops``.

The last line of stdout is one JSON object: ``device``, ``peak_tflops``, ``matmul_tflops``,
``seq_len``, and per config ``tokens_per_s``, ``mfu``, ``baseline_tokens_per_s``, ``baseline_mfu``,
``peak_mem_gb``, ``baseline_peak_mem_gb`` (and ``eager_tokens_per_s``, ``eager_mfu`` with --eager-too),
and ``world`` (processes; the baseline keys only with one).
Usage: python benchmarks/trainer.py [--quick] [--configs 0.5b,1.5b] [--seq-len N] [--no-compile]
       torchrun --nproc-per-node N benchmarks/trainer.py --configs 1.5b --micro 8
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

from reference_trainer.losses import grpo_loss
from reference_trainer.model import load_model
from reference_trainer.parallelize import init_distributed, shard_model
from reference_trainer.rl import token_logprobs

GPU_CONFIGS = {"0.5b": "qwen2-0.5b", "1.5b": "qwen2-1.5b"}
CPU_CONFIGS = {"tiny": "tiny-dense"}
DATASHEET_TFLOPS = {"H100": 989.4, "H200": 989.4}
"""Dense bfloat16 tensor-core peak of the SXM parts (no sparsity)."""
TARGET_MFU = 0.40


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul parameter, plus causal attention (see the docstring)."""
    config = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 6 * config.num_hidden_layers * seq_len * config.num_attention_heads * head_dim
    return 6.0 * matmul + attention


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured throughput of one large square matmul: the achievable ceiling of this run."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    repeats = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, optimizer, batches, compiled: bool) -> None:
    """``len(batches)`` forward/backward passes, then one optimizer step (the RL update's shape).

    An FSDP2 model reduces its gradients once, after the last micro-batch."""
    sharded = isinstance(model, FSDPModule)
    for i, ids_BT in enumerate(batches):
        if sharded:
            model.set_requires_gradient_sync(i == len(batches) - 1)
        logp_BT = token_logprobs(model, ids_BT, None, compiled=compiled)
        mask_BT = torch.ones_like(logp_BT)
        adv_B = torch.ones(ids_BT.shape[0], device=ids_BT.device)
        loss, _ = grpo_loss(logp_BT, logp_BT.detach(), adv_B, mask_BT)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(model, args, device, compiled: bool = False) -> tuple[float, float | None]:
    """Tokens per second over the timed steps (after warm-up steps), all ranks together, and the
    largest peak memory of any rank in GB. Each rank trains on its own share of the global batch."""
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=fused, foreach=not fused)
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator(device=device).manual_seed(rank)
    vocab = model.config.vocab_size
    shape = (1, args.seq_len)
    local = args.micro // world
    batches = [torch.randint(0, vocab, shape, device=device, generator=g) for _ in range(local)]
    model.train()
    for _ in range(args.warmup):
        train_step(model, optimizer, batches, compiled)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, optimizer, batches, compiled)
    sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None  # not tracked on CPU
    del optimizer
    elapsed, peak = largest(elapsed, device), (largest(peak, device) if peak is not None else None)
    return args.steps * local * world * args.seq_len / elapsed, peak


def largest(value: float, device) -> float:
    """The maximum of ``value`` over the ranks (the slowest rank sets the step time)."""
    if dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_config(name: str, preset: str, args, device, mesh, peak_tflops: float) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out: dict = {"preset": preset}

    world = dist.get_world_size()
    say = print if dist.get_rank() == 0 else lambda *a, **k: None
    model = load_model(preset, dtype=dtype, device=device)
    per_token = flops_per_token(model, args.seq_len)
    out["params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    if args.baseline and world == 1:  # the plain model is one device's; nothing to compare it with on N
        rate, mem = measure(model, args, device)
        out.update(baseline_tokens_per_s=rate, baseline_mfu=rate * per_token / (peak_tflops * 1e12),
                   baseline_peak_mem_gb=mem)  # fmt: skip
        say(
            f"{name} baseline (plain, eager): {rate:,.0f} tokens/s, MFU {out['baseline_mfu']:.1%}", flush=True
        )
    del model
    release(device)

    variants = [("", args.compile)] + ([("eager_", False)] if args.eager_too and args.compile else [])
    for prefix, compiled in variants:
        model = shard_model(load_model(preset, device=device), mesh=mesh, compile_blocks=compiled)
        rate, mem = measure(model, args, device, compiled)
        mfu = rate * per_token / (world * peak_tflops * 1e12)
        out.update({f"{prefix}tokens_per_s": rate, f"{prefix}mfu": mfu, f"{prefix}peak_mem_gb": mem})
        label = ("FSDP2, compiled blocks" if compiled else "FSDP2, eager") + (
            f", {world} ranks" if world > 1 else ""
        )
        say(f"{name} trainer ({label}): {rate:,.0f} tokens/s, MFU {mfu:.1%}", flush=True)
        del model
        release(device)
    return out


def main(args) -> dict:
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    gpu = device.type == "cuda"
    configs = GPU_CONFIGS if gpu else CPU_CONFIGS
    if args.configs:
        chosen = args.configs.split(",")
        unknown = [c for c in chosen if c not in configs]
        if unknown:
            raise SystemExit(f"unknown config(s) {unknown} on {device.type}; choose from {sorted(configs)}")
        configs = {c: configs[c] for c in chosen}
    args.seq_len = args.seq_len or (8192 if gpu else 512)
    args.compile = args.compile if args.compile is not None else gpu
    name = torch.cuda.get_device_name() if gpu else "cpu"
    measured = matmul_tflops(device, torch.bfloat16 if gpu else torch.float32)
    peak = next((v for k, v in DATASHEET_TFLOPS.items() if k in name), measured)
    mesh = init_distributed(device.type)
    if args.micro % dist.get_world_size():
        raise SystemExit(
            f"--micro {args.micro} (the global batch) must divide evenly over {dist.get_world_size()} ranks"
        )
    result: dict = {"device": name, "peak_tflops": peak, "matmul_tflops": measured, "seq_len": args.seq_len,
                    "world": dist.get_world_size(), "micro": args.micro}  # fmt: skip
    try:
        for config, preset in configs.items():
            result[config] = run_config(config, preset, args, device, mesh, peak)
    finally:
        torch.distributed.destroy_process_group()
    return result


def rounded(value):
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps; on a GPU only the 0.5b config")
    parser.add_argument("--configs", help=f"comma-separated, from {sorted(GPU_CONFIGS)} (GPU) or tiny (CPU)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default 8192 on GPU, 512 on CPU)")
    parser.add_argument("--micro", type=int, default=4,
                        help="sequences per optimizer step over all ranks (the global batch)")  # fmt: skip
    parser.add_argument("--steps", type=int, help="timed steps (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3, quick 2)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile decoder blocks in the trainer path (default: on a GPU)")  # fmt: skip
    parser.add_argument("--eager-too", action="store_true", help="also time the eager FSDP2 path")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="time the plain model first (one process only)")  # fmt: skip
    cli = parser.parse_args()
    cli.steps = cli.steps or (2 if cli.quick else 5)
    cli.warmup = cli.warmup or (2 if cli.quick else 3)
    if cli.quick and not cli.configs and torch.cuda.is_available():
        cli.configs = "0.5b"
    if cli.quick and not torch.cuda.is_available():
        cli.micro = min(cli.micro, 2)
    out = rounded(main(cli))
    if int(os.environ.get("RANK", "0")) != 0:
        raise SystemExit(0)
    for config in (k for k, v in out.items() if isinstance(v, dict)):
        mfu, base = out[config]["mfu"], out[config].get("baseline_tokens_per_s")
        ratio = f"{out[config]['tokens_per_s'] / base:.2f}x the plain baseline, " if base else ""
        print(f"{config}: {ratio}MFU {mfu:.1%}"
              + (f" ({'meets' if mfu >= TARGET_MFU else 'MISSES'} the {TARGET_MFU:.0%} target)"
                 if config == "1.5b" else ""))  # fmt: skip
    print(json.dumps(out))
