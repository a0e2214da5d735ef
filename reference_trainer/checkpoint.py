"""Trainer checkpoints (model + optimizer, any sharding) and Hugging Face exports.

- :func:`save_checkpoint` writes ``root/step_{N:06d}/`` with ``torch.distributed.checkpoint`` (DCP):
  each rank writes its own shards of the model and optimizer state (FQN keys from
  ``get_state_dict``), rank 0 adds ``checkpoint.json`` (step, caller's ``extra``). The files go to
  ``step_{N:06d}.tmp`` first and rank 0 renames the directory only after every rank has finished,
  so a crash mid-save leaves a ``.tmp`` directory that :func:`latest_checkpoint` skips and
  :func:`load_checkpoint` refuses.
- :func:`load_checkpoint` reads one back into a model and optimizer of the same architecture,
  sharded any way: a checkpoint saved by N FSDP2 ranks loads on M ranks or in one plain process
  (DCP reshards).
- :func:`export_hf` gathers the full weights on rank 0 and writes a ``from_pretrained``-loadable
  directory (safetensors, config, tokenizer): the hand-off to evaluation or a serving engine.

Every rank must call save, load and export (they are collective when a process group exists);
without one they run in a single process. Limits: all ranks must see the same filesystem; saving
is synchronous (no async DCP); learning-rate schedulers and RNG states are not saved (put what you
need in ``extra``, which must be JSON); loading restores the optimizer's hyper-parameters (lr ...)
from the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch

META_FILE = "checkpoint.json"
"""Rank 0's metadata next to the DCP files: ``{"step": int, "extra": dict, "world_size": int}``."""

_STEP_DIR = re.compile(r"step_(\d{6,})")


def _dist():
    """``torch.distributed`` when a process group is initialised, else ``None`` (a single process)."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def _barrier() -> None:
    dist = _dist()
    if dist:
        dist.barrier()


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence DCP's warning that it runs without a process group: a single process is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """``{"model": ..., "optim": ...}`` keyed by parameter FQN, any sharding (DTensors under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    step: int,
    extra: dict | None = None,
) -> Path:
    """Save model and optimizer state to ``directory/step_{step:06d}/``; return that path.

    ``directory`` is the checkpoint root. Every rank calls it. An existing checkpoint of the same step
    is replaced (only once the new one is complete); a leftover ``.tmp`` of an interrupted save is
    discarded. ``extra`` (JSON-serialisable) comes back from :func:`load_checkpoint`.
    """
    import torch.distributed.checkpoint as dcp

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"save_checkpoint: step must be a non-negative int, got {step!r}")
    world_size = _dist().get_world_size() if _dist() else 1
    meta = {"step": step, "extra": dict(extra or {}), "world_size": world_size}
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"save_checkpoint: extra must be JSON-serialisable ({e}); convert it first") from e
    final = Path(directory) / f"step_{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    with _single_process_quiet():
        dcp.save(_state_dicts(model, optimizer), checkpoint_id=tmp)
    _barrier()  # every rank's shards are on disk before the directory may look complete
    if _rank() == 0:
        _write_synced(tmp / META_FILE, meta_text)
        _replace_dir(tmp, final)
    _barrier()
    return final


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_complete(path: Path) -> bool:
    return (
        _STEP_DIR.fullmatch(path.name) is not None
        and (path / META_FILE).is_file()
        and (path / ".metadata").is_file()
    )


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete ``root/step_*`` checkpoint with the highest step, or ``None`` if there is none.

    Interrupted saves (``.tmp``) and other entries are ignored; a missing ``root`` gives ``None``.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.is_dir() and _is_complete(p)]
    return max(done, key=lambda p: int(_STEP_DIR.fullmatch(p.name).group(1)), default=None)


def _read_meta(path: Path) -> dict:
    """The checkpoint's metadata; a clear ConfigError if ``path`` is not a complete checkpoint."""
    hint = (
        "pass a step directory written by save_checkpoint; latest_checkpoint(root) finds the newest "
        "complete one"
    )
    if not path.is_dir():
        raise ConfigError(f"load_checkpoint: no checkpoint at {str(path)!r} (not a directory); {hint}")
    if path.name.endswith(".tmp"):
        raise ConfigError(
            f"load_checkpoint: {str(path)!r} is an interrupted save (a '.tmp' directory), not a "
            f"checkpoint; {hint}"
        )
    if not (path / META_FILE).is_file() or not (path / ".metadata").is_file():
        if any(_is_complete(p) for p in path.iterdir() if p.is_dir()):
            hint = f"it looks like a checkpoint root: pass latest_checkpoint({str(path)!r}) instead"
        raise ConfigError(
            f"load_checkpoint: {str(path)!r} is not a complete checkpoint (expected {META_FILE} and DCP's "
            f".metadata in it); {hint}"
        )
    try:
        meta = json.loads((path / META_FILE).read_text())
        return {"step": int(meta["step"]), "extra": dict(meta.get("extra") or {})}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"load_checkpoint: {str(path / META_FILE)!r} is unreadable ({e}); {hint}") from e


def _check_names(path: Path, state: dict[str, Any]) -> None:
    """Raise ConfigError unless the checkpoint holds exactly the model's parameters (and optimizer state
    when asked for)."""
    import torch.distributed.checkpoint as dcp

    saved = set(dcp.FileSystemReader(path).read_metadata().state_dict_metadata)
    saved_model = {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    wanted = set(state["model"])
    if saved_model != wanted:
        missing, unexpected = sorted(wanted - saved_model), sorted(saved_model - wanted)
        raise ConfigError(
            f"load_checkpoint: the parameters in {str(path)!r} do not match the model: "
            f"{len(missing)} missing from the checkpoint (e.g. {missing[:3]}), {len(unexpected)} not in the "
            f"model (e.g. {unexpected[:3]}); load it into the architecture and config it was saved from"
        )
    if "optim" in state and not any(k.startswith("optim.") for k in saved):
        raise ConfigError(
            f"load_checkpoint: {str(path)!r} was saved without optimizer state; pass optimizer=None to load "
            "the model only"
        )


def load_checkpoint(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Load a checkpoint step directory into ``model`` (and ``optimizer``); return ``{"step", "extra"}``.

    The model may be sharded differently from the one that saved (FSDP2 over any number of ranks, or
    plain). ``optimizer=None`` loads the weights only. Every rank calls it.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    path = Path(directory)
    meta = _read_meta(path)
    state = _state_dicts(model, optimizer)
    _check_names(path, state)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=path)
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return meta


def _tied_output_key(model: torch.nn.Module, state_dict: dict[str, Any]) -> str | None:
    """The output-embedding key to leave out when it is tied to the input embedding (HF re-ties on load)."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return None
    try:
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if out is None or inp is None or out.weight is not inp.weight:
        return None
    names = {id(m): n for n, m in model.named_modules()}
    key = f"{names[id(out)]}.weight" if id(out) in names else None
    return key if key in state_dict else None


def export_hf(directory: str | Path, model: torch.nn.Module, tokenizer: Any = None) -> Path:
    """Write the full model as a Hugging Face directory (safetensors, config, tokenizer); return its path.

    Every rank calls it (the weights are gathered from all shards); rank 0 writes. ``model`` is a
    ``transformers`` ``PreTrainedModel``, plain or FSDP2-sharded; a tied LM head is stored once, as
    ``from_pretrained`` expects. The files are written to ``directory.tmp`` and renamed, replacing an
    earlier export; an existing ``directory`` that is not a model export (no ``config.json``) is refused.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not hasattr(model, "save_pretrained"):
        raise ConfigError(f"export_hf: {type(model).__name__} is not a transformers PreTrainedModel")
    final = Path(directory)
    if final.exists() and not (final / "config.json").is_file():
        raise ConfigError(
            f"export_hf: {str(final)!r} exists and is not a model export (no config.json); "
            "choose a new or empty-of-other-files directory"
        )
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state_dict = get_model_state_dict(model, options=options)  # full tensors on rank 0, empty elsewhere
    if _rank() == 0:
        tied = _tied_output_key(model, state_dict)
        if tied is not None:
            del state_dict[tied]
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, state_dict=state_dict)  # safetensors: the only format in transformers 5
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _replace_dir(tmp, final)
    _barrier()
    return final
