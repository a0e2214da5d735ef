"""Multi-GPU scaling of the reference trainer: FSDP2 throughput on 1, 2, ... GPUs at one global batch.

Runs ``benchmarks/trainer.py`` (its trainer path: FSDP2, bfloat16 compute, compiled blocks) under
torchrun, one process per GPU, for each GPU count, with the same model and the same global batch
(``--micro`` sequences of ``--seq-len`` tokens per optimizer step, split over the ranks). Scaling
efficiency on N GPUs is throughput on N over N times throughput on 1, both measured in this run.
It then runs ``benchmarks/tree.py`` on 2 GPUs (each rank its own tree, FSDP2-sharded model) for the
tree-training speedup over linearised paths there.

Without GPUs it runs the same on CPU processes with gloo and the tiny model: that shows the code
path works, not how a GPU cluster scales. NVLink multicast stays off in every child (NCCL's NVLS,
PyTorch symmetric memory, NVSHMEM), as the machines that lend several GPUs here require.

The last line of stdout is one JSON object: ``device``, ``config``, ``seq_len``, ``global_batch``,
``gpus`` (a list of ``{"gpus": N, "tokens_per_s", "mfu", "peak_mem_gb", "efficiency"}``) and
``tree_2gpu`` (the tree benchmark's ``ratios`` on 2 ranks, or null when fewer than 2 GPUs).
Usage: python benchmarks/scaling.py [--quick] [--gpus 1,2,4,8] [--config 1.5b] [--micro 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TARGETS = {2: 0.85, 8: 0.75}
"""Scaling efficiency to reach at N GPUs (for a model of about 1.5B parameters)."""
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def torchrun(nprocs: int, script: str, args: list[str], timeout: float) -> dict:
    """Run ``script`` on ``nprocs`` local processes; return the JSON object its last stdout line holds."""
    env = {
        **os.environ,
        **NO_MULTICAST,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}",
           str(HERE / script), *args]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    for line in lines[:-1]:
        print("  ", line, flush=True)
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{script} on {nprocs} process(es) failed with exit status {done.returncode}")
    return json.loads(lines[-1])


def main(args) -> dict:
    gpu = torch.cuda.is_available()
    config = (args.config or ("0.5b" if args.quick else "1.5b")) if gpu else "tiny"
    available = torch.cuda.device_count() if gpu else max(2, min(4, os.cpu_count() or 1))
    wanted = (
        {int(n) for n in args.gpus.split(",")} if args.gpus else {n for n in (1, 2, 4, 8) if n <= available}
    )
    counts = sorted(wanted)  # efficiency is against the 1-GPU run, so it runs first
    if any(n > available for n in counts) or 1 not in counts:
        raise SystemExit(
            f"--gpus {counts}: need 1 in the list and at most {available} (what this machine has)"
        )
    if any(args.micro % n for n in counts):
        raise SystemExit(f"--micro {args.micro} (the global batch) must divide by every count in {counts}")
    steps = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    common = ["--configs", config, "--micro", str(args.micro), "--no-baseline", *steps]
    if args.seq_len:
        common += ["--seq-len", str(args.seq_len)]
    out: dict = {"config": config, "global_batch": args.micro, "gpus": []}
    one = None
    for n in counts:
        result = torchrun(n, "trainer.py", common, args.timeout)
        row = result[config]
        out.update(device=result["device"], seq_len=result["seq_len"])
        one = one or row["tokens_per_s"]
        efficiency = row["tokens_per_s"] / (n * one)
        figures = {key: row[key] for key in ("tokens_per_s", "mfu", "peak_mem_gb")}
        out["gpus"].append({"gpus": n, **figures, "efficiency": round(efficiency, 3)})
        print(f"{n} GPU(s): {row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.1%}, "
              f"scaling efficiency {efficiency:.1%}", flush=True)  # fmt: skip
    out["tree_2gpu"] = None
    if available >= 2 and not args.no_tree:
        ratios = "1,4,8" if args.quick else "1,2,4,8"
        tree = torchrun(2, "tree.py", ["--ratios", ratios, *steps], args.timeout)
        out["tree_2gpu"] = tree["ratios"]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="the 0.5b config and fewer steps on GPUs")
    parser.add_argument("--gpus", help="comma-separated process counts (default 1,2,4,8 up to what is there)")
    parser.add_argument(
        "--config", help="trainer.py config: 0.5b or 1.5b on GPUs (default 1.5b), tiny on CPU"
    )
    parser.add_argument("--micro", type=int, default=8, help="global batch: sequences per optimizer step")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (trainer.py's default)")
    parser.add_argument("--steps", type=int, help="timed steps (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3, quick 1)")
    parser.add_argument("--no-tree", action="store_true", help="skip the 2-GPU tree benchmark")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each torchrun may take")
    cli = parser.parse_args()
    cli.steps = cli.steps or (2 if cli.quick else 5)
    cli.warmup = cli.warmup or (1 if cli.quick else 3)
    if cli.quick and not torch.cuda.is_available():
        cli.micro = 4
    result = main(cli)
    for row in result["gpus"]:
        target = TARGETS.get(row["gpus"])
        if target and result["config"] == "1.5b":
            verdict = "meets" if row["efficiency"] >= target else "MISSES"
            print(f"{row['gpus']} GPUs: efficiency {row['efficiency']:.1%} {verdict} the {target:.0%} target")
    print(json.dumps(result))
