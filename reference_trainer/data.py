"""Training samples from kwaigym episode records: one token sequence per path of the call tree.

Each path (as in the ``turns`` exporter) is the last call's prompt and answer, rendered with the
tokenizer's chat template *incrementally*: the text of messages ``[:k]`` is a prefix of the text
of messages ``[:k+1]``, and the difference is message ``k``. An assistant turn the policy produced
on the path is split into its generation header (what ``add_generation_prompt`` adds: context)
and its body (policy output, ``loss_mask`` 1, ``turn_ids`` = its index among the path's produced
turns). Each piece of text is tokenised on its own (``add_special_tokens=False``); with templates
whose turns are delimited by special tokens this equals tokenising the whole text.

Where the engine's token ids are stored for the call that produced a turn, the re-tokenised
prompt (the sequence up to the turn's body) must equal ``prompt_token_ids`` and the body must
start with ``token_ids`` (a trailing EOS the template does not render is ignored). A turn that
fails either check is counted in :class:`DataReport` and gets loss mask 0: it is never silently
trained on. A turn that passes carries the rollout log-probabilities on the engine's tokens;
template tokens after them (e.g. a newline after the end-of-turn token) were not sampled and get
loss mask 0. A turn whose call has no engine ids is trained on as rendered (log-probs unknown).

Limits: a template that is not prefix-stable (e.g. one printing the tools *after* the messages,
or dropping earlier turns' reasoning) cannot give one sequence per path; such paths are dropped
and counted (``unstable_paths``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from kwaigym.errors import ConfigError
from kwaigym.trajectory.export import RL_KINDS, chat_messages, chat_tools, decoded_episodes, produced_turns
from kwaigym.trajectory.tree import message_key


@attrs.define
class Sample:
    """One path of one episode as a token sequence; every per-token list has ``len(input_ids)``."""

    input_ids: list[int]
    loss_mask: list[int]
    """1 on policy-generated tokens that passed the engine checks, 0 elsewhere."""
    turn_ids: list[int]
    """Index of the produced assistant turn a token belongs to (before any masking), -1 elsewhere."""
    rollout_logprobs: list[float]
    """Rollout log-prob of ``input_ids[t]`` at position ``t``; NaN where unknown."""
    has_rollout_logprobs: bool
    """Whether every token with ``loss_mask`` 1 has a known rollout log-prob (and there is one)."""
    reward: float
    reward_valid: bool
    group_id: str
    """The task id: samples of one task form a GRPO group."""
    episode_id: str
    path: list[str] = attrs.Factory(list)
    """Call ids of the path, root first."""


@attrs.define
class DataReport:
    samples: int = 0
    tokens: int = 0
    policy_tokens: int = 0
    """Tokens with loss mask 1."""
    turns: int = 0
    """Produced assistant turns over all samples."""
    checked_calls: int = 0
    """Distinct calls with engine token ids whose turn was checked."""
    mismatched_calls: int = 0
    """Distinct calls whose prompt or answer did not match the re-tokenised sequence (masked)."""
    mismatched_answers: int = 0
    """Of those, calls whose prompt matched but whose answer tokens did not."""
    unstable_paths: int = 0
    """Paths dropped because the chat template is not prefix-stable on them."""
    invalid_episodes: int = 0
    dropped_invalid: int = 0
    """Samples dropped for an invalid reward (``drop_invalid=True``)."""


class _Unstable(Exception):
    pass


def _render(tokenizer, messages, tools, generation: bool = False) -> str:
    if not messages and not generation:
        return ""
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=generation
    )


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _tail(longer: str, prefix: str) -> str:
    if not longer.startswith(prefix):
        raise _Unstable
    return longer[len(prefix) :]


def samples_from_episodes(
    records: Iterable[Any],
    tokenizer,
    *,
    kinds: Sequence[str] = RL_KINDS,
    drop_invalid: bool = False,
) -> tuple[list[Sample], DataReport]:
    """One :class:`Sample` per path of each record's call tree (see the module docstring)."""
    report, samples = DataReport(), []
    eos = tokenizer.eos_token_id
    for header, calls, tree in decoded_episodes(records, kinds):
        valid = bool(header["reward_valid"])
        reward = header["reward"]
        reward = float("nan") if reward is None else float(reward)
        paths = list(tree.paths())
        report.invalid_episodes += not valid and bool(paths)
        if not valid and drop_invalid:
            report.dropped_invalid += len(paths)
            continue
        checked: set[str] = set()
        bad: set[str] = set()
        bad_answers: set[str] = set()
        for call_ids in paths:
            path = [calls[c] for c in call_ids]
            try:
                sample = _path_sample(path, tree, tokenizer, eos, checked, bad, bad_answers)
            except _Unstable:
                report.unstable_paths += 1
                continue
            sample.reward, sample.reward_valid = reward, valid
            sample.group_id, sample.episode_id = str(header["task_id"]), str(header["episode_id"])
            samples.append(sample)
            report.samples += 1
            report.tokens += len(sample.input_ids)
            report.policy_tokens += sum(sample.loss_mask)
            report.turns += len({t for t in sample.turn_ids if t >= 0})
        report.checked_calls += len(checked)
        report.mismatched_calls += len(bad)
        report.mismatched_answers += len(bad_answers)
    return samples, report


def _path_sample(path, tree, tokenizer, eos, checked, bad, bad_answers) -> Sample:
    last = path[-1]
    produced = produced_turns(path, tree)
    tools = chat_tools(last.request) or None
    groups = chat_messages(last.messages, last.request)
    ids: list[int] = []
    mask: list[int] = []
    turns: list[int] = []
    logprobs: list[float] = []

    def add(tokens, m, turn, lps=None):
        ids.extend(tokens)
        mask.extend([m] * len(tokens))
        turns.extend([turn] * len(tokens))
        logprobs.extend(lps if lps is not None else [math.nan] * len(tokens))

    flat: list[dict[str, Any]] = []
    text = ""
    turn = 0
    for index, group in enumerate(groups):
        by = produced.get(index)
        if by is None:
            flat.extend(group)
            new = _render(tokenizer, flat, tools)
            add(_encode(tokenizer, _tail(new, text)), 0, -1)
            text = new
            continue
        # a produced assistant turn: one message (tool results are the only ones that split)
        prompt_text = _render(tokenizer, flat, tools, generation=True)
        add(_encode(tokenizer, _tail(prompt_text, text)), 0, -1)
        flat.extend(group)
        new = _render(tokenizer, flat, tools)
        body = _encode(tokenizer, _tail(new, prompt_text))
        text = new
        exact = message_key(last.messages[index]) == message_key(by.answer)
        known = by.prompt_token_ids is not None and by.token_ids is not None
        if not known:
            add(body, 1, turn)
        else:
            checked.add(by.call_id)
            engine = list(by.token_ids)
            if engine and engine[-1] == eos and body[len(engine) - 1 : len(engine)] != [eos]:
                engine = engine[:-1]
            prompt_ok = list(by.prompt_token_ids) == ids
            answer_ok = not exact or body[: len(engine)] == engine
            if not (prompt_ok and answer_ok):
                bad.add(by.call_id)
                if prompt_ok:
                    bad_answers.add(by.call_id)
                add(body, 0, turn)
            elif not exact:  # re-sent changed (e.g. reasoning dropped): these tokens were not sampled
                add(body, 1, turn)
            else:
                n = len(engine)
                lps = None
                if by.logprobs is not None and len(by.logprobs) >= n:
                    lps = [float(x) for x in by.logprobs[:n]] + [math.nan] * (len(body) - n)
                ids.extend(body)
                mask.extend([1] * n + [0] * (len(body) - n))
                turns.extend([turn] * len(body))
                logprobs.extend(lps if lps is not None else [math.nan] * len(body))
        turn += 1
    policy = [lp for lp, m in zip(logprobs, mask, strict=True) if m]
    has = bool(policy) and not any(math.isnan(lp) for lp in policy)
    return Sample(input_ids=ids, loss_mask=mask, turn_ids=turns, rollout_logprobs=logprobs,
                  has_rollout_logprobs=has, reward=math.nan, reward_valid=False, group_id="",
                  episode_id="", path=[c.call_id for c in path])  # fmt: skip


ADVANTAGES = {"grpo": {}, "dr_grpo": {"std_normalize": False}, "reinforce": {"center": False}}
"""Advantage estimators by name: keyword arguments of :func:`~reference_trainer.losses.group_advantages`."""


def collate(samples: Sequence[Sample], pad_id: int, *, advantage: str = "grpo") -> dict[str, Any]:
    """Right-padded tensors for a batch.

    ``input_ids`` / ``turn_ids`` (long; pad ``pad_id`` / -1), ``attention_mask`` (long),
    ``loss_mask`` (float, 0 on padding), ``rollout_logprobs`` (float, 0 where unknown or padding),
    ``has_rollout_logprobs`` / ``reward_valid`` (bool, per row), ``rewards`` (float, NaN when
    unknown), ``advantages`` (float, :func:`~reference_trainer.losses.group_advantages` over the
    batch's *episodes*, grouped by task id, so an episode with several paths counts once; 0 for
    invalid rewards; ``advantage`` names the estimator, see :data:`ADVANTAGES`).
    """
    import torch

    from reference_trainer.losses import group_advantages

    B = len(samples)
    T = max((len(s.input_ids) for s in samples), default=0)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    loss_mask = torch.zeros((B, T), dtype=torch.float32)
    turn_ids = torch.full((B, T), -1, dtype=torch.long)
    logprobs = torch.zeros((B, T), dtype=torch.float32)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[i, :n] = torch.tensor(s.input_ids, dtype=torch.long)
        attention[i, :n] = 1
        loss_mask[i, :n] = torch.tensor(s.loss_mask, dtype=torch.float32)
        turn_ids[i, :n] = torch.tensor(s.turn_ids, dtype=torch.long)
        lp = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
        logprobs[i, :n] = torch.nan_to_num(lp, nan=0.0)
    first: dict[str, Sample] = {}  # one row per episode: its paths share one reward
    for s in samples:
        first.setdefault(s.episode_id, s)
    episodes = {e: i for i, e in enumerate(first)}
    groups: dict[str, int] = {}
    ep = list(first.values())
    rewards_E = torch.tensor([s.reward if s.reward_valid else 0.0 for s in ep], dtype=torch.float32)
    group_E = torch.tensor([groups.setdefault(s.group_id, len(groups)) for s in ep], dtype=torch.long)
    valid_E = torch.tensor([s.reward_valid and not math.isnan(s.reward) for s in ep], dtype=torch.bool)
    if advantage not in ADVANTAGES:
        raise ConfigError(f"collate: advantage must be one of {sorted(ADVANTAGES)}, got {advantage!r}")
    adv_E = group_advantages(rewards_E, group_E, valid_E, **ADVANTAGES[advantage]) if ep else torch.zeros(0)
    advantages = torch.stack([adv_E[episodes[s.episode_id]] for s in samples]) if B else torch.zeros(0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "loss_mask": loss_mask,
        "turn_ids": turn_ids,
        "rollout_logprobs": logprobs,
        "has_rollout_logprobs": torch.tensor([s.has_rollout_logprobs for s in samples], dtype=torch.bool),
        "rewards": torch.tensor([s.reward for s in samples], dtype=torch.float32),
        "reward_valid": torch.tensor([s.reward_valid for s in samples], dtype=torch.bool),
        "advantages": advantages.to(torch.float32),
    }
