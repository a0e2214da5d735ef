"""Tree training: one forward and backward over a DFS-flattened trajectory tree, exact per branch.

Agents make tree-shaped trajectories: sub-agents branch off the main loop, context compaction and
rewritten history restart from a shared prefix. Training every root-to-leaf path as its own
sequence recomputes the shared prefixes once per path. Here the tree is computed once:

1. :class:`FlatTree` holds kwaigym's DFS-flattened tree (the ``tree`` exporter's rows, or
   :func:`kwaigym.trajectory.export.flatten` of token paths): per token its ``parent``, its
   ``position_ids`` (its depth along its paths, not its offset in the flat sequence) and
   ``subtree_end``. Several trees pack into one forest (:func:`pack`).
2. The tree attention mask: query ``q`` sees key ``k`` iff ``k <= q < subtree_end[k]``, i.e.
   exactly its ancestors and itself. On a GPU it is a FlexAttention ``BlockMask`` (blocks outside
   the tree are skipped, so attention costs what the tree holds, not N^2); on the CPU, where
   FlexAttention has no backward, a dense boolean mask through ``scaled_dot_product_attention``.
   Hugging Face models take either as ``attention_mask`` with our ``position_ids``
   (:func:`tree_logprobs`).
3. Token ``i`` is predicted by the logits at its **parent** (not at ``i - 1``), so
   :func:`tree_logprobs` returns, for every token, ``log p(token | its ancestors)``, computed once.
4. :func:`gather_paths` reads each root-to-leaf path's view out of those per-token values as
   ordinary ``(paths, T - 1)`` rows, the shape every loss in :mod:`reference_trainer.losses`
   takes. The loss is then exactly the loss of the linearised paths (turn-level GSPO, IcePop,
   OPD alike, clipping and normalisation included), and autograd sums the gradient of a shared
   token over the paths that hold it.

About per-token weights (the report's formulation, the exporter's ``weight``): multiplying a
token-level loss by how many paths hold the token is exact when the per-token loss is the same
on every path through it, e.g. SFT or a REINFORCE term whose advantage is shared by the whole
episode. It is not exact for sequence- or turn-level ratios computed per path, and under PPO
clipping a token shared by paths with advantages of both signs needs two weights (one per side
of the clip). Gathering per path (step 4) needs none of that, costs only an index per path
token, and is what this module does.

flash-attn: its varlen kernels take packed *documents* (block-diagonal causal masks), which
express a forest of chains but no branching; trees here always go through FlexAttention (GPU) or
SDPA with a dense mask (CPU). Limits: the dense CPU mask is ``N x N`` booleans (64 MB at 8k
tokens); one packed forest per forward (batch size 1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch

Attention = Literal["auto", "flex", "sdpa"]


@attrs.frozen
class FlatTree:
    """A DFS-flattened tree (or forest): per-token arrays of length N, and each path's token indices.

    ``paths[p]`` lists path ``p``'s flat token indices from its root to its leaf; its tokens in
    order are ``input_ids[paths[p]]``.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    parent: torch.Tensor
    subtree_end: torch.Tensor
    loss_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    """NaN where unknown."""
    paths: tuple[torch.Tensor, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def path_tokens(self) -> int:
        """Tokens summed over paths: what training every path linearly processes."""
        return sum(int(p.numel()) for p in self.paths)

    @property
    def sharing_ratio(self) -> float:
        """``path_tokens / num_tokens``: the ideal speedup of tree training over linearised paths."""
        return self.path_tokens / max(self.num_tokens, 1)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FlatTree:
        """From a row of kwaigym's ``tree`` exporter (or the dict :func:`~kwaigym.trajectory.export.flatten`
        returns): ``input_ids``, ``parent``, ``position_ids``, ``loss_mask``, ``subtree_end``,
        ``path_ends`` and optionally ``logprobs``."""
        import torch

        missing = [k for k in ("input_ids", "parent", "position_ids", "loss_mask", "subtree_end", "path_ends")
                   if k not in row]  # fmt: skip
        if missing:
            raise ConfigError(f"FlatTree.from_row: the row has no {', '.join(missing)}: is it a tree row?")
        n = len(row["input_ids"])
        logprobs = row.get("logprobs") or [None] * n
        lengths = {k: len(row[k]) for k in ("parent", "position_ids", "loss_mask", "subtree_end")}
        lengths["logprobs"] = len(logprobs)
        if any(v != n for v in lengths.values()):
            raise ConfigError(
                f"FlatTree.from_row: per-token lists differ in length from input_ids ({n}): {lengths}"
            )
        parent = torch.tensor(row["parent"], dtype=torch.long)
        if n and not bool(((parent < torch.arange(n)) & (parent >= -1)).all()):
            raise ConfigError(
                "FlatTree.from_row: every parent must come before its child (DFS order), or be -1"
            )
        _check_subtree_end(row["parent"], row["subtree_end"])
        paths, parents = [], list(row["parent"])  # a Python list: indexing a tensor per token is slow
        for end in row["path_ends"]:
            if not -1 <= end < n:
                raise ConfigError(f"FlatTree.from_row: path end {end} is outside the {n} tokens")
            chain = []
            while end != -1:
                chain.append(end)
                end = parents[end]
            paths.append(torch.tensor(chain[::-1], dtype=torch.long))
        return cls(
            input_ids=torch.tensor(row["input_ids"], dtype=torch.long),
            position_ids=torch.tensor(row["position_ids"], dtype=torch.long),
            parent=parent,
            subtree_end=torch.tensor(row["subtree_end"], dtype=torch.long),
            loss_mask=torch.tensor(row["loss_mask"], dtype=torch.float32),
            rollout_logprobs=torch.tensor([float("nan") if v is None else v for v in logprobs]),
            paths=tuple(paths),
        )

    @classmethod
    def from_sequences(cls, sequences: Sequence[tuple[Sequence[int], Sequence[int], Sequence[float | None]]]):
        """Flatten token paths ``(ids, loss_mask, logprobs)`` (shared prefixes merge) into a tree."""
        from kwaigym.trajectory.export import flatten

        return cls.from_row(flatten([(list(i), list(m), list(lp)) for i, m, lp in sequences]))

    def to(self, device) -> FlatTree:
        return attrs.evolve(
            self,
            **{f.name: getattr(self, f.name).to(device) for f in attrs.fields(FlatTree) if f.name != "paths"},
            paths=tuple(p.to(device) for p in self.paths),
        )


def _check_subtree_end(parent: Sequence[int], subtree_end: Sequence[int]) -> None:
    """Token ``i``'s descendants (by ``parent``) must be exactly the tokens ``i + 1 .. subtree_end[i] - 1``
    (DFS pre-order): the attention mask is built from ``subtree_end`` alone."""
    n = len(parent)
    last = list(range(n))  # the last descendant, or itself
    size = [1] * n  # descendants and itself
    for i in range(n - 1, 0, -1):  # children come after their parents: fold upward
        p = parent[i]
        if p >= 0:
            last[p], size[p] = max(last[p], last[i]), size[p] + size[i]
    for i, end in enumerate(subtree_end):
        if not (end == last[i] + 1 == i + size[i]):
            gaps = "" if last[i] + 1 == i + size[i] else " and are not contiguous"
            raise ConfigError(
                f"FlatTree.from_row: subtree_end[{i}] is {end}, but token {i}'s {size[i] - 1} descendants "
                f"(by parent) end at {last[i] + 1}{gaps}: the tree must be in DFS pre-order with "
                "subtree_end one past each subtree; re-export the row"
            )


def pack(trees: Sequence[FlatTree]) -> FlatTree:
    """Several trees as one forest: indices shifted, so each tree's tokens see only their own."""
    import torch

    if not trees:
        raise ConfigError("pack: no trees to pack")
    offsets = [0]
    for t in trees[:-1]:
        offsets.append(offsets[-1] + t.num_tokens)

    def cat(name: str, shift: bool = False) -> torch.Tensor:
        parts = []
        for t, off in zip(trees, offsets, strict=True):
            v = getattr(t, name)
            parts.append(torch.where(v >= 0, v + off, v) if shift else v)
        return torch.cat(parts)

    return FlatTree(
        input_ids=cat("input_ids"),
        position_ids=cat("position_ids"),
        parent=cat("parent", shift=True),
        subtree_end=cat("subtree_end", shift=True),
        loss_mask=cat("loss_mask"),
        rollout_logprobs=cat("rollout_logprobs"),
        paths=tuple(p + off for t, off in zip(trees, offsets, strict=True) for p in t.paths),
    )


def dense_tree_mask(subtree_end: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` booleans, ``mask[q, k] = k <= q < subtree_end[k]``: ancestors and itself are visible."""
    import torch

    idx = torch.arange(subtree_end.numel(), device=subtree_end.device)
    return (idx[None, :] <= idx[:, None]) & (idx[:, None] < subtree_end[None, :])


def flex_tree_mask(subtree_end: torch.Tensor, *, block_size: int = 128):
    """The same mask as a FlexAttention ``BlockMask`` (CUDA): fully masked blocks are never computed."""
    from torch.nn.attention.flex_attention import create_block_mask

    n = subtree_end.numel()

    def visible(b, h, q, k):
        return (k <= q) & (q < subtree_end[k])

    return create_block_mask(visible, B=None, H=None, Q_LEN=n, KV_LEN=n, device=subtree_end.device,
                             BLOCK_SIZE=block_size)  # fmt: skip


def choose_attention(model, attention: Attention = "auto") -> str:
    """``flex`` on CUDA, ``sdpa`` (dense mask) on the CPU, unless asked for one."""
    if attention not in ("auto", "flex", "sdpa"):
        raise ConfigError(f"tree attention must be 'auto', 'flex' or 'sdpa', got {attention!r}")
    if attention != "auto":
        return attention
    device = next(model.parameters()).device
    return "flex" if device.type == "cuda" else "sdpa"


def use_attention(model, attention: str) -> None:
    """Switch a Hugging Face model's attention kernel to the one the tree mask needs."""
    wanted = "flex_attention" if attention == "flex" else "sdpa"
    if getattr(model.config, "_attn_implementation", None) != wanted:
        model.set_attn_implementation(wanted)


def tree_logprobs(
    model,
    tree: FlatTree,
    *,
    attention: Attention = "auto",
    temperature: float = 1.0,
    compiled: bool = False,
) -> torch.Tensor:
    """``log p(token | its ancestors)`` for every token of ``tree`` in one forward: shape ``(N,)``.

    Roots (no parent) get 0. The model runs on the flat sequence with the tree's position ids and
    mask; token ``i`` is scored by the logits at ``parent[i]``. Gradients flow when enabled.
    ``compiled`` uses the compiled log-prob head of :mod:`reference_trainer.rl`.
    """
    import torch

    kind = choose_attention(model, attention)
    device = next(model.parameters()).device
    tree = tree.to(device)
    mask = (
        flex_tree_mask(tree.subtree_end) if kind == "flex" else dense_tree_mask(tree.subtree_end)[None, None]
    )
    before = getattr(model.config, "_attn_implementation", None)
    use_attention(model, kind)
    try:
        out = model(input_ids=tree.input_ids[None], position_ids=tree.position_ids[None], attention_mask=mask,
                    use_cache=False)  # fmt: skip
    finally:  # the model's own kernel (e.g. flash-attn) serves its other forwards; backward needs no switch
        if before is not None and before != model.config._attn_implementation:
            model.set_attn_implementation(before)
    # Per position one normaliser, then each token's own logit at its parent's position: no (N, V) copy
    # of the logits gathered by parent (and no scatter of one in backward), unlike logits[parent].
    logits = out.logits[0]
    lse = (_compiled_logsumexp() if compiled else _logsumexp)(logits, temperature)
    source = tree.parent.clamp(min=0)
    logp = logits[source, tree.input_ids].float() / temperature - lse[source]
    return torch.where(tree.parent >= 0, logp, torch.zeros((), device=device, dtype=logp.dtype))


def _logsumexp(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(logits / temperature)`` over the vocabulary, in float32."""
    import torch

    return torch.logsumexp(logits.float() / temperature, dim=-1)


@functools.cache
def _compiled_logsumexp():
    import torch

    return torch.compile(_logsumexp, dynamic=True)  # one fused pass over the (N, V) logits


def gather_paths(tree: FlatTree, values: torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
    """Per-path rows ``(P, T - 1)`` in the losses' layout: row ``p``, column ``t`` is ``values`` at
    the path's token ``t + 1`` (for log-probs: the log-prob of that token given the ones before).

    Padding is ``fill``. The gather is differentiable: a shared token's gradient is summed over
    the paths that hold it.
    """
    import torch

    width = max((p.numel() for p in tree.paths), default=1) - 1
    out = torch.full((len(tree.paths), max(width, 0)), fill, dtype=values.dtype, device=values.device)
    rows = []
    for p, idx in enumerate(tree.paths):
        if idx.numel() > 1:
            rows.append((p, idx[1:].to(values.device)))
    if not rows:
        return out
    row_ids = torch.cat([torch.full_like(idx, p) for p, idx in rows])
    col_ids = torch.cat([torch.arange(idx.numel(), device=values.device) for _, idx in rows])
    return out.index_put((row_ids, col_ids), values[torch.cat([idx for _, idx in rows])])


def path_valid(tree: FlatTree, device=None) -> torch.Tensor:
    """``(P, T - 1)`` booleans: where :func:`gather_paths` rows hold a real token, not padding."""
    import torch

    ones = torch.ones(tree.num_tokens, device=device)
    return gather_paths(tree, ones) > 0
