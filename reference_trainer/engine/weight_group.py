"""A process group of its own for sending weights from the trainer to rollout servers (rank 0 = trainer).

Weight sync "from a distributed group" joins the trainer's rank 0 and every server's GPU workers in
a group apart from the trainer's own world, then broadcasts each tensor from rank 0. SGLang builds
its side with ``sglang.srt.utils.init_custom_process_group`` (a TCP rendezvous, a store prefixed by
the group's name, NCCL); to meet it the trainer must build its side the same way, so for NCCL this
module calls that very function (SGLang installed on the trainer, as RL frameworks do). For Gloo (the
CPU case: kwaigym's own engine server in tests) both sides use :class:`WeightGroup` below, a backend
constructed on a TCP store directly, which touches no global ``torch.distributed`` state and so lets
a trainer and a server share a process.
"""

from __future__ import annotations

import datetime

from kwaigym.errors import ConfigError


class WeightGroup:
    """One rank of a broadcast group: ``broadcast(tensor)`` sends (rank 0) or receives in place."""

    def __init__(
        self,
        master_address: str,
        master_port: int,
        rank: int,
        world_size: int,
        *,
        group_name: str = "weight_update_group",
        backend: str = "gloo",
        timeout_s: float = 300.0,
    ):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend, self.group_name = rank, world_size, backend, group_name
        self._sglang = None
        if backend == "nccl":
            try:
                from sglang.srt.utils import init_custom_process_group
            except ImportError:
                raise ConfigError(
                    "weight sync over NCCL needs sglang installed on the trainer too (its side of the "
                    "group must be built as the server builds its own); install the sglang extra"
                ) from None
            self._sglang = init_custom_process_group(
                backend="nccl",
                init_method=f"tcp://{master_address}:{master_port}",
                world_size=world_size,
                rank=rank,
                group_name=group_name,
            )
            return
        if backend != "gloo":
            raise ConfigError(f"weight group: backend must be nccl or gloo, got {backend!r}")
        store = dist.TCPStore(master_address, master_port, world_size, rank == 0, timeout=timeout)
        self._store = store  # the master's store must outlive the group
        self._pg = dist.ProcessGroupGloo(dist.PrefixStore(group_name, store), rank, world_size, timeout)

    def broadcast(self, tensor, src: int = 0) -> None:
        """Rank ``src`` sends ``tensor``; every other rank receives into it (blocking)."""
        if self._sglang is not None:
            import torch.distributed as dist

            dist.broadcast(tensor, src=src, group=self._sglang)
            return
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank, options.rootTensor = src, 0
        self._pg.broadcast([tensor], options).wait()

    def close(self) -> None:
        """Leave the group (the server side is told with ``destroy_weights_update_group``)."""
        if self._sglang is not None:
            import torch.distributed as dist

            dist.destroy_process_group(self._sglang)
            self._sglang = None
        else:
            self._pg = None
