"""Teachers for On-Policy Distillation: the best expert per domain, scoring the student's samples.

OPD (:func:`reference_trainer.losses.opd_advantages`) needs, for every token the student sampled,
the teacher's log-prob of that token: one forward of the teacher over the student's sequence, with
only the picked log-probs kept (no full logits leave the forward). :class:`TeacherScorer` does this

- batched: the sequences of a step are sorted by length and scored in forwards of at most
  ``max_batch_tokens`` padded tokens, each over its prefix tree (the rows share the system prompt
  and tools, and a task's samples its prompt: computed once);
- cached: by exact token sequence (a bounded LRU). A sharp student samples the same trajectory
  many times within a group and across steps; each distinct one is scored once.

:func:`best_experts` picks, per domain, the expert with the highest measured pass rate there, and
:func:`teacher_logprobs` builds the ``(B, T-1)`` teacher tensor of a collated batch, NaN on rows
whose domain has no teacher (their OPD term is then zero).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch


@attrs.define
class ScorerStats:
    sequences: int = 0
    """Sequences asked for."""
    cache_hits: int = 0
    forwards: int = 0
    """Teacher forward passes (batches)."""
    scored_tokens: int = 0
    """Tokens the teacher ran over (padding excluded)."""


class TeacherScorer:
    """A frozen teacher model that returns the log-probs of given token sequences (see the module).

    Args:
        model: a causal LM (Hugging Face interface), used in eval mode under ``no_grad``.
        name: for messages and metrics (the expert's name).
        max_batch_tokens: padded tokens per forward (rows x longest row).
        cache_size: distinct sequences kept; the least recently used go first.
    """

    def __init__(
        self, model, *, name: str = "teacher", max_batch_tokens: int = 16384, cache_size: int = 4096
    ):
        if max_batch_tokens < 1 or cache_size < 0:
            raise ConfigError(
                f"teacher {name!r}: max_batch_tokens must be >= 1 and cache_size >= 0, "
                f"got {max_batch_tokens} and {cache_size}"
            )
        self.model = model.eval()
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.cache_size = cache_size
        self.stats = ScorerStats()
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @classmethod
    def load(cls, path, *, name: str | None = None, **kwargs) -> TeacherScorer:
        """The teacher at model directory ``path`` (float32 on the CPU, as :func:`load_model` gives)."""
        from reference_trainer.model import load_model

        return cls(load_model(path), name=name or str(path), **kwargs)

    def score(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per sequence ``ids``, the teacher's log-prob of ``ids[t]`` given ``ids[:t]`` for ``t >= 1``
        (float32, length ``len(ids) - 1``)."""
        keys = [_key(ids) for ids in sequences]
        self.stats.sequences += len(sequences)
        missing: dict[bytes, Sequence[int]] = {}
        for key, ids in zip(keys, sequences, strict=True):
            if len(ids) < 2:
                raise ConfigError(
                    f"teacher {self.name!r}: a sequence needs at least 2 tokens, got {len(ids)}"
                )
            if key in self._cache:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
            else:
                missing.setdefault(key, ids)
        fresh = self._forward(missing) if missing else {}
        out = []
        for key in keys:
            out.append(fresh[key] if key in fresh else self._cache[key])
        for key, value in fresh.items():
            self._cache[key] = value
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return [t.clone() for t in out]

    def _forward(self, todo: Mapping[bytes, Sequence[int]]) -> dict[bytes, torch.Tensor]:
        import torch

        from reference_trainer.rl import tree_token_logprobs

        device = next(self.model.parameters()).device
        order = sorted(todo, key=lambda k: len(todo[k]))
        result: dict[bytes, torch.Tensor] = {}
        start = 0
        while start < len(order):
            # grow the batch while rows x longest row stays within the budget (rows are sorted by length)
            end = start + 1
            while end < len(order) and (end + 1 - start) * len(todo[order[end]]) <= self.max_batch_tokens:
                end += 1
            chunk = order[start:end]
            width = len(todo[chunk[-1]])
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, key in enumerate(chunk):
                seq = todo[key]
                ids[row, : len(seq)] = torch.as_tensor(list(seq))
                mask[row, : len(seq)] = 1
            with torch.no_grad():
                logp = tree_token_logprobs(self.model, ids.to(device), mask.to(device)).float().cpu()
            for row, key in enumerate(chunk):
                result[key] = logp[row, : len(todo[key]) - 1]
            self.stats.forwards += 1
            self.stats.scored_tokens += int(mask.sum())
            start = end
        return result


def _key(ids: Sequence[int]) -> bytes:
    return hashlib.blake2b(b",".join(str(int(i)).encode() for i in ids), digest_size=16).digest()


def best_experts(pass_rates: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """Per domain, the expert with the highest pass rate measured on it (ties: the first named).

    ``pass_rates`` is ``{expert: {domain: rate}}``; a domain no expert was measured on is an error."""
    domains = {d for rates in pass_rates.values() for d in rates}
    if not pass_rates or not domains:
        raise ConfigError("best_experts: no pass rates measured (evaluate the experts first)")
    chosen = {}
    for domain in sorted(domains):
        measured = [(rates[domain], name) for name, rates in pass_rates.items() if domain in rates]
        best = max(measured, key=lambda pair: pair[0])
        chosen[domain] = best[1]
    return chosen


def teacher_logprobs(
    batch: Mapping[str, torch.Tensor],
    row_teachers: Sequence[TeacherScorer | None],
) -> torch.Tensor:
    """The ``(B, T-1)`` teacher log-probs of a collated batch (:func:`reference_trainer.data.collate`):
    row ``b`` scored by ``row_teachers[b]``, NaN where it has none and on padding. Each teacher scores
    all of its rows in one call (batched and cached there)."""
    import torch

    input_ids = batch["input_ids"]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    if len(row_teachers) != input_ids.shape[0]:
        raise ConfigError(f"teacher_logprobs: {len(row_teachers)} teachers for {input_ids.shape[0]} rows")
    out = torch.full((input_ids.shape[0], max(input_ids.shape[1] - 1, 0)), float("nan"))
    by_teacher: dict[int, list[int]] = {}
    for row, teacher in enumerate(row_teachers):
        if teacher is not None and lengths[row] >= 2:
            by_teacher.setdefault(id(teacher), []).append(row)
    for rows in by_teacher.values():
        teacher = row_teachers[rows[0]]
        scores = teacher.score([input_ids[r, : int(lengths[r])].tolist() for r in rows])
        for r, logp in zip(rows, scores, strict=True):
            out[r, : logp.shape[0]] = logp
    return out.to(input_ids.device)
