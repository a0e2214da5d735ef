"""Data parallelism for the reference trainer: process group set-up and FSDP2 sharding.

The model code stays single-device; this module is the one place that applies activation
checkpointing and ``torch.distributed.fsdp.fully_shard`` (FSDP2) to it:

- every decoder block becomes its own FSDP unit (its parameters are gathered just before its
  forward and freed after), then the root takes what is left (embeddings, final norm, LM head);
- on GPU, parameters are computed in bfloat16 and gradients reduced in float32; on CPU everything
  stays float32 (gloo has no bfloat16 reduction worth using, and tests compare to 1e-5);
- gradients are **summed** over ranks, not averaged (divide factor 1). The losses in
  :mod:`reference_trainer.losses` take a global normaliser (``num_tokens`` ...), so each rank's
  loss is its local sum over the global count and the summed gradient is the whole batch's
  gradient, exactly, however unevenly tokens fall on the ranks. Use :func:`global_count` to get
  that count.

Limits: one flat data-parallel mesh (no HSDP, tensor or expert parallelism); ``torch.compile`` per
block (the log-prob head compiles separately: ``token_logprobs(compiled=True)`` in
:mod:`reference_trainer.rl`); no CPU offload. Decoder blocks are found as ``model.model.layers``
(Hugging Face Llama, Qwen2, Qwen3-MoE and most causal LMs) or, failing that, as modules whose class
name ends with ``DecoderLayer``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch.distributed.device_mesh import DeviceMesh


def init_distributed(device_type: str | None = None) -> DeviceMesh:
    """Join the process group described by torchrun's environment; return a 1-D data-parallel mesh.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (a single
    process with none of them set runs as rank 0 of 1 on 127.0.0.1). ``device_type`` is ``"cuda"``
    when a GPU is visible and ``"cpu"`` otherwise; CUDA uses NCCL and binds the process to GPU
    ``LOCAL_RANK``, CPU uses gloo. Calling it again reuses the existing process group.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type not in ("cuda", "cpu"):
        raise ConfigError(f"init_distributed: expected device_type 'cuda' or 'cpu', got {device_type!r}")
    if not dist.is_available():
        raise ConfigError("init_distributed: this torch build has no torch.distributed; install one with it")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    device = None
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # device_id binds NCCL to this rank's GPU up front (barriers and collectives then need no guess)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", device_id=device)
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("dp",))


def global_count(local: int, mesh: DeviceMesh | None = None) -> int:
    """The sum of ``local`` over all ranks (of ``mesh``, or of the default group): the global normaliser.

    Every rank must call it. Without an initialised process group it returns ``local``.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return int(local)
    group = mesh.get_group() if mesh is not None else None
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    total = torch.tensor([int(local)], dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return int(total.item())


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated transformer blocks, in order (the units FSDP shards one at a time)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is not None and len(layers) > 0:
        return list(layers)
    blocks = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not blocks:
        raise ConfigError(
            f"shard_model: found no decoder blocks in {type(model).__name__}: expected model.model.layers "
            "or modules whose class name ends with 'DecoderLayer'; shard it by hand with fully_shard"
        )
    return blocks


def _enable_checkpointing(model: torch.nn.Module, blocks: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Recompute each block's activations in backward; return the blocks to shard (maybe wrapped).

    Hugging Face models checkpoint in place (parameter names, hence weight sync, are unchanged);
    other models get their blocks replaced by ``checkpoint_wrapper``s.
    """
    if getattr(model, "supports_gradient_checkpointing", False):
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return blocks
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    wrapped = []
    for block in blocks:
        parent, name = _parent_of(model, block)
        new = checkpoint_wrapper(block)
        setattr(parent, name, new)
        wrapped.append(new)
    return wrapped


def _parent_of(model: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is target:
                return parent, name
    raise ConfigError(f"shard_model: block {type(target).__name__} is not a submodule of the model")


def shard_model(
    model: torch.nn.Module,
    *,
    mesh: DeviceMesh | None = None,
    mixed_precision: bool | None = None,
    reshard_after_forward: bool | None = None,
    activation_checkpointing: bool = False,
    compile_blocks: bool = False,
) -> torch.nn.Module:
    """Shard ``model`` in place with FSDP2 over ``mesh`` (default: all ranks); return it.

    Args:
        model: a single-device model, on the mesh's device type.
        mesh: a 1-D device mesh, as from :func:`init_distributed`; ``None`` uses the default group.
        mixed_precision: bfloat16 parameters with float32 gradient reduction; ``None`` means on
            for CUDA and off (all float32) for CPU.
        reshard_after_forward: free each block's gathered parameters after its forward (less
            memory, one more all-gather in backward); the root is never resharded, as it is
            needed again first in backward. ``None``: only with more than one rank (one rank's
            shard is the whole model, so resharding would save nothing and cost a gather).
        activation_checkpointing: recompute each block's activations in backward.
        compile_blocks: ``torch.compile`` each decoder block (after checkpointing, before sharding,
            so FSDP's communication stays outside the compiled graphs). Blocks share one code
            object, so they compile once; fused norms, rotary and activations are where eager
            PyTorch loses most of its time on a GPU.

    Gradient reduction sums over ranks (divide factor 1): normalise each rank's loss by the
    global count (:func:`global_count`), not the local one.
    """
    import torch
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    device_type = mesh.device_type if mesh is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if mixed_precision is None:
        mixed_precision = device_type == "cuda"
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    if reshard_after_forward is None:
        import torch.distributed as dist

        world = mesh.size() if mesh is not None else dist.get_world_size()
        reshard_after_forward = world > 1
    blocks = decoder_blocks(model)
    if activation_checkpointing:
        blocks = _enable_checkpointing(model, blocks)
    for block in blocks:
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # a plain SUM: gloo has no PREMUL_SUM, and with factor 1 there is nothing to scale
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model
