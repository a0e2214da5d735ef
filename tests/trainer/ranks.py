"""Process groups for tests: ranks spawned on this machine, talking over loopback with gloo."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, world: int, port: int):
    """In a spawned worker: torchrun's environment for ``rank`` on loopback, one thread; the mesh."""
    import torch

    from reference_trainer.parallelize import init_distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    torch.set_num_threads(1)
    return init_distributed("cpu")


def spawn(worker, *args, world: int) -> None:
    """Run ``worker(rank, port, *args)`` in ``world`` processes (a fresh port each time)."""
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(free_port(), *args), nprocs=world)
