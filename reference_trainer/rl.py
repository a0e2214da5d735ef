"""A minimal, real RL loop in one process: sample episodes with the local engine, train on them.

One step (:func:`rl_step`):

1. roll out ``group_size`` episodes per task through kwaigym's rollout runner, every call answered
   by an :class:`~reference_trainer.engine.base.EngineResponder` on ``engine``. A local engine's model
   is also the trained model: the optimizer updates its weights in place, so the next step samples
   from the new policy (fully on-policy, no weight sync); an SGLang engine is sent the trained
   model's weights after the update (``engine.sync_from``);
2. turn the episodes into samples (:func:`~kwaigym.trajectory.store.episode_to_dict`, then
   :func:`~reference_trainer.data.samples_from_episodes`) and collate them (group advantages);
3. :func:`update`: one forward pass for the current log-probs (``logits[:, :-1]`` predict
   ``input_ids[:, 1:]``; every per-token tensor is shifted by one to match), old log-probs = the
   rollout's where known, the detached current ones elsewhere; the IcePop mask between the two;
   the loss (turn-level GSPO or GRPO); backward; gradient clipping; one optimizer step, under the
   engine's lock, after which ``engine.weights_version`` moves on.

    engine, optimizer = make_trainer("/path/to/model", config)
    for _ in range(steps):
        metrics = await rl_step(engine, tasks, config, backend=backend, optimizer=optimizer)

:mod:`reference_trainer.train` wraps this in the full loop (metrics, checkpoints, resume, export).
Limits: one forward over the whole batch (no micro-batching); no reference-model KL penalty (the
``kl_rollout`` metric is the rollout/trainer mismatch); the multi-GPU path (FSDP2) is in
:mod:`reference_trainer.parallelize`. Sampling constraints that forbid tokens (a generation
config's ``suppress_tokens``) are not part of the trainer's log-probs: the IcePop mask reports
and filters such mismatch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from kwaigym.errors import ConfigError
from reference_trainer.losses import grpo_loss, icepop_mask, mcla_logprobs, opd_advantages, turn_gspo_loss

if TYPE_CHECKING:
    import torch

    from kwaigym.task import Task
    from reference_trainer.engine.base import ChatEngine
    from reference_trainer.engine.local import LocalEngine
    from reference_trainer.teacher import TeacherScorer

LOSSES = ("turn_gspo", "grpo")


def _one_of(choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise ConfigError(f"RLConfig.{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _positive(instance, attribute, value):
    if not value > 0:
        raise ConfigError(f"RLConfig.{attribute.name} must be > 0, got {value!r}")


@attrs.define
class RLConfig:
    group_size: int = attrs.field(default=4, validator=_positive)
    """Episodes per task per step (one GRPO group)."""
    lr: float = attrs.field(default=1e-6, validator=_positive)
    loss: str = attrs.field(default="turn_gspo", validator=_one_of(LOSSES))
    advantage: str = attrs.field(default="grpo", validator=_one_of(("grpo", "dr_grpo", "reinforce")))
    """The advantage estimator (:data:`~reference_trainer.data.ADVANTAGES`): group-normalised
    (GRPO), group-centred (Dr.GRPO) or the reward itself (REINFORCE without a baseline: only
    successes move the policy)."""
    turn_ratio: str = attrs.field(default="mean", validator=_one_of(("mean", "sum")))
    """Turn-level GSPO's ratio (see :func:`~reference_trainer.losses.turn_gspo_loss`)."""
    eps_low: float | None = None
    """Clip range; ``None`` takes the loss's default (GSPO 3e-4/4e-4, GRPO 0.2/0.28)."""
    eps_high: float | None = None
    icepop_low: float = 0.5
    icepop_high: float = 5.0
    opd_lambda: float = 1.0
    """On-Policy Distillation's weight: with teacher log-probs given to :func:`update`, each policy
    token's advantage becomes ``A - opd_lambda (log pi_student - log pi_teacher)`` (GRPO loss only)."""
    tree: bool = False
    """Compute the batch's log-probs over its prefix tree (:mod:`reference_trainer.tree`): paths that
    share a prefix (samples of one episode, one task's system prompt) compute it once; the loss and
    its gradients are those of the linear rows."""
    mcla_k: int = attrs.field(default=1, validator=_positive)
    """Prefills averaged for the trainer's old log-probs (MCLA, report eq. 11) that IcePop compares
    with the rollout's; 1 = the training forward's own. Worth more than 1 only when the forward is
    stochastic (MoE routing noise, non-deterministic kernels): see
    :func:`~reference_trainer.losses.mcla_logprobs`."""
    max_new_tokens: int = attrs.field(default=512, validator=_positive)
    """Per model call (the engine's limit is set to it for the rollout)."""
    seed: int = 0
    """Seeds the engine's sampling (:func:`make_trainer`)."""
    updates: int = attrs.field(default=1, validator=_positive)
    """Optimizer steps per rollout batch (PPO's epochs). The first is on-policy; later ones reuse
    the batch against the same old log-probs, so the clip range bounds how far they move. More
    than 1 gets more learning out of each (expensive) rollout."""
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    """AdamW's (:func:`make_trainer`); 0 so that a step with zero advantages changes nothing."""
    scaffold: str = "mini"
    concurrency: int = attrs.field(default=4, validator=_positive)
    sample_threads: int | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    """torch's intra-op threads while the local engine samples (``LocalEngine(threads=...)``);
    None leaves torch's setting. 1 on a small CPU machine: the sandboxes need the other cores."""


def make_trainer(path, config: RLConfig) -> tuple[LocalEngine, torch.optim.Optimizer]:
    """The local engine for the model at ``path`` and an AdamW on its parameters."""
    import torch

    from reference_trainer.engine.local import LocalEngine

    torch.manual_seed(config.seed)
    engine = LocalEngine(
        path, max_new_tokens=config.max_new_tokens, seed=config.seed, threads=config.sample_threads
    )
    return engine, torch.optim.AdamW(
        engine.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )


def picked_logprobs(logits_BTV, targets_BT, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / temperature)[target]`` per position, in float32, shape ``(B, T)``.

    logsumexp + gather rather than a log-softmax: no ``(B, T, V)`` float32 copy is kept for backward.
    """
    import torch

    logits_BTV = logits_BTV.float()
    if temperature != 1.0:
        logits_BTV = logits_BTV / temperature
    picked_BT = logits_BTV.gather(-1, targets_BT[..., None]).squeeze(-1)
    return picked_BT - torch.logsumexp(logits_BTV, dim=-1)


@functools.cache
def _compiled_picked_logprobs():
    import torch

    # One fused reduction over the vocabulary instead of separate cast, gather and logsumexp passes
    # (and their backward): at 8k tokens x 152k vocabulary those passes move ~50 GB per sequence.
    return torch.compile(picked_logprobs, dynamic=True)


def token_logprobs(
    model, input_ids_BT, attention_mask_BT, *, temperature: float = 1.0, compiled: bool = False
) -> torch.Tensor:
    """Log-prob of ``input_ids[:, t]`` given the tokens before it, for ``t >= 1``: shape ``(B, T-1)``.

    ``compiled`` runs the log-prob head through ``torch.compile`` (worth it on a GPU with a large
    vocabulary; the first call compiles).
    """
    # use_cache=False: a training forward needs no KV cache (and a cache would make compiled blocks differ)
    out = model(input_ids=input_ids_BT, attention_mask=attention_mask_BT, use_cache=False)
    head = _compiled_picked_logprobs() if compiled else picked_logprobs
    return head(out.logits[:, :-1], input_ids_BT[:, 1:], temperature)


TREE_MIN_SHARING = 1.1
"""Below this sharing ratio (path tokens / unique tokens) :func:`tree_token_logprobs` runs the rows as
they are: on an H200 the tree's FlexAttention pass costs up to ~20 % more than the plain batch's
flash attention when the rows share nothing (``benchmarks/tree.py``)."""


def tree_token_logprobs(
    model, input_ids_BT, attention_mask_BT, *, temperature: float = 1.0, compiled: bool = False
) -> torch.Tensor:
    """:func:`token_logprobs` of right-padded rows, computed once over their prefix tree.

    Rows that share a prefix (the samples of one episode, or a common system prompt) become one
    DFS-flattened tree (:mod:`reference_trainer.tree`); each row's log-probs are read back from it,
    so any loss on the result is the linear rows' loss, gradients included. Padding gets 0. Rows
    that share less than :data:`TREE_MIN_SHARING` are run as a plain batch.
    """
    import torch

    from reference_trainer.tree import FlatTree, gather_paths, tree_logprobs

    B, T = input_ids_BT.shape
    lengths = attention_mask_BT.sum(-1).tolist() if attention_mask_BT is not None else [T] * B
    rows = [(ids[:n].tolist(), [0] * n, [None] * n) for ids, n in zip(input_ids_BT, lengths, strict=True)]
    tree = FlatTree.from_sequences(rows)
    if tree.sharing_ratio < TREE_MIN_SHARING:  # nothing to save: the plain batch is the faster kernel
        return token_logprobs(
            model, input_ids_BT, attention_mask_BT, temperature=temperature, compiled=compiled
        )
    per_token = tree_logprobs(model, tree, temperature=temperature, compiled=compiled)
    logp_BT = gather_paths(tree, per_token)
    return torch.nn.functional.pad(logp_BT, (0, T - 1 - logp_BT.shape[1]))


def known_logprobs(samples: Sequence[Any], T: int) -> torch.Tensor:
    """``(B, T)`` bool: where a sample's rollout log-prob is known (not NaN, not padding)."""
    import torch

    known_BT = torch.zeros((len(samples), T), dtype=torch.bool)
    for i, s in enumerate(samples):
        lp = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
        known_BT[i, : len(lp)] = ~torch.isnan(lp)
    return known_BT


def update(
    model,
    batch: dict[str, Any],
    config: RLConfig,
    optimizer,
    *,
    known_BT: torch.Tensor | None = None,
    temperature: float = 1.0,
    teacher_BT: torch.Tensor | None = None,
) -> dict[str, float]:
    """One policy-gradient step on a collated batch (see the module docstring); returns metrics.

    ``teacher_BT`` (log-probs of ``input_ids[:, 1:]`` under a teacher, as :func:`token_logprobs`
    gives them) turns the step into On-Policy Distillation jointly with RL
    (:func:`~reference_trainer.losses.opd_advantages`, against the log-probs that sampled).

    ``known_BT`` marks the tokens whose rollout log-probs are known (default: every token of the
    rows with ``has_rollout_logprobs``). A batch with no policy token or all-zero advantages gives
    a zero loss that still backpropagates (zero gradients: with no weight decay, no change).
    """
    import torch

    input_ids_BT = batch["input_ids"]
    if input_ids_BT.shape[0] == 0 or input_ids_BT.shape[1] < 2:
        return {"loss": 0.0, "clip_frac": 0.0, "icepop_masked_frac": 0.0, "policy_tokens": 0.0,
                "grad_norm": 0.0, "updated": 0.0}  # fmt: skip
    if known_BT is None:
        known_BT = batch["has_rollout_logprobs"][:, None].expand_as(input_ids_BT)
    mask_BT = batch["loss_mask"][:, 1:]
    turns_BT = batch["turn_ids"][:, 1:]
    known_BT = known_BT[:, 1:]
    rollout_BT = batch["rollout_logprobs"][:, 1:]
    adv_B = batch["advantages"]
    if teacher_BT is not None and config.loss != "grpo":
        raise ConfigError(
            f"update: On-Policy Distillation gives per-token advantages, which need loss='grpo' "
            f"(got {config.loss!r}: its ratio is per turn)"
        )

    model.train()
    try:
        forward = tree_token_logprobs if config.tree else token_logprobs
        logp_BT = forward(model, input_ids_BT, batch["attention_mask"], temperature=temperature)
        current_BT = logp_BT.detach()
        if config.mcla_k > 1:
            with torch.no_grad():
                current_BT = mcla_logprobs(
                    lambda: forward(model, input_ids_BT, batch["attention_mask"], temperature=temperature),
                    config.mcla_k,
                )
        old_BT = torch.where(known_BT, rollout_BT, current_BT)
        icepop_BT, _ = icepop_mask(current_BT, old_BT, config.icepop_low, config.icepop_high, mask_BT=mask_BT)
        clip = {
            k: v for k, v in (("eps_low", config.eps_low), ("eps_high", config.eps_high)) if v is not None
        }
        if teacher_BT is not None:
            adv_B = opd_advantages(adv_B, old_BT, teacher_BT, mask_BT, lam=config.opd_lambda)

        def loss_of(logp_BT):
            if config.loss == "turn_gspo":
                return turn_gspo_loss(logp_BT, old_BT, adv_B, mask_BT, turns_BT,
                                      turn_ratio=config.turn_ratio, icepop_BT=icepop_BT, **clip)  # fmt: skip
            return grpo_loss(logp_BT, old_BT, adv_B, mask_BT, icepop_BT=icepop_BT, **clip)

        loss, metrics = loss_of(logp_BT)
        grad_norm = _step(model, loss, optimizer, config.max_grad_norm)
        for _ in range(config.updates - 1):  # PPO epochs: the same batch, the same old log-probs
            logp_BT = forward(model, input_ids_BT, batch["attention_mask"], temperature=temperature)
            _step(model, loss_of(logp_BT)[0], optimizer, config.max_grad_norm)
    finally:
        model.eval()
    with torch.no_grad():
        policy = mask_BT > 0
        log_ratio = (current_BT - rollout_BT)[policy & known_BT]  # log pi_train / pi_rollout per token
        mismatch = log_ratio.abs()
        # k3 estimate of KL(pi_rollout || pi_train) from the rollout's own samples: r - 1 - log r
        kl = (torch.exp(log_ratio) - 1 - log_ratio).mean() if log_ratio.numel() else torch.zeros(())
    return {
        "loss": float(loss.detach()),
        "clip_frac": metrics["clip_frac"],
        "ratio_mean": metrics["ratio_mean"],
        "icepop_masked_frac": metrics.get("icepop_masked_frac", 0.0),
        "policy_tokens": float(policy.sum()),
        "known_logprob_tokens": float((policy & known_BT).sum()),
        "logprob_abs_diff_mean": float(mismatch.mean()) if mismatch.numel() else 0.0,
        "kl_rollout": float(kl),
        "grad_norm": grad_norm,
        "updated": 1.0,
    }


async def rl_step(
    engine: ChatEngine,
    tasks: Sequence[Task],
    config: RLConfig,
    *,
    backend=None,
    optimizer,
    teacher_for: Callable[[str], TeacherScorer | None] | None = None,
    scaffold_for: Callable[[Task], str] | None = None,
    model=None,
) -> dict[str, float]:
    """Roll out ``config.group_size`` episodes per task with ``engine``, then one :func:`update`.

    ``teacher_for`` (task id -> teacher, or None) makes the step On-Policy Distillation jointly
    with RL: each sample is scored by its task's teacher (:mod:`reference_trainer.teacher`); needs
    ``config.loss == "grpo"``. ``scaffold_for`` (task -> scaffold name) runs tasks of several
    domains each with its own agent (default: ``config.scaffold`` for all). ``model`` is the trained
    model (default ``engine.model``: a local engine sharing it); after the update the engine is synced
    from it (``engine.sync_from``: a version bump for the shared model, weights sent to SGLang servers)."""
    from kwaigym.policies import Policy
    from kwaigym.rollout import rollout
    from kwaigym.trajectory.store import episode_to_dict
    from reference_trainer.data import collate, samples_from_episodes
    from reference_trainer.engine.base import EngineResponder
    from reference_trainer.teacher import teacher_logprobs

    model = getattr(engine, "model", None) if model is None else model
    if model is None:
        raise ConfigError(f"rl_step: {type(engine).__name__} holds no model; pass the trained one as model=")
    engine.max_new_tokens = config.max_new_tokens
    responder = EngineResponder(engine)
    started = time.perf_counter()
    by_scaffold: dict[str, list[Task]] = {}
    for task in tasks:
        by_scaffold.setdefault(scaffold_for(task) if scaffold_for else config.scaffold, []).append(task)
    results = []
    for scaffold, group in by_scaffold.items():
        results += await rollout(group, [scaffold], lambda task, scaffold: Policy(responder),
                                 samples=config.group_size, concurrency=config.concurrency, backend=backend,
                                 show_progress=False)  # fmt: skip
    rollout_s = time.perf_counter() - started
    records = [episode_to_dict(r) for r in results]
    samples, report = samples_from_episodes(records, engine.tokenizer)
    tokenizer = engine.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = collate(samples, pad_id, advantage=config.advantage)
    known_BT = known_logprobs(samples, batch["input_ids"].shape[1])
    teacher_BT, opd = None, {}
    if teacher_for is not None and samples:
        started = time.perf_counter()
        teacher_BT = teacher_logprobs(batch, [teacher_for(s.group_id) for s in samples])
        opd = _opd_metrics(batch, teacher_BT, time.perf_counter() - started)
    started = time.perf_counter()
    # a served local engine (reference_trainer.engine.server) samples between steps only
    with getattr(engine, "lock", contextlib.nullcontext()):
        metrics = update(
            model, batch, config, optimizer, known_BT=known_BT, temperature=engine.logprob_temperature,
            teacher_BT=teacher_BT,
        )  # fmt: skip
    update_s = time.perf_counter() - started
    metrics["weights_version"] = float(await engine.sync_from(model, tokenizer))
    trained_tokens = float(batch["attention_mask"].sum()) if batch["input_ids"].numel() else 0.0

    valid = [r.reward for r in results if r.reward_valid and r.reward is not None]
    statuses: dict[str, float] = {}
    for r in results:
        statuses[f"status_{r.status}"] = statuses.get(f"status_{r.status}", 0.0) + 1
    adv = batch["advantages"]
    metrics.update(
        episodes=float(len(results)),
        reward_valid_frac=len(valid) / len(results) if results else 0.0,
        reward_mean=sum(valid) / len(valid) if valid else math.nan,
        pass_rate=sum(r >= 1.0 for r in valid) / len(valid) if valid else math.nan,
        samples=float(len(samples)),
        tokens=float(report.tokens),
        advantage_abs_mean=float(adv.abs().mean()) if adv.numel() else 0.0,
        rollout_s=rollout_s,
        update_s=update_s,
        train_tokens_per_s=trained_tokens / update_s if update_s > 0 else 0.0,
        **{f"data_{k}": float(v) for k, v in attrs.asdict(report).items()},
        **statuses,
        **opd,
    )
    return metrics


def _step(model, loss, optimizer, max_grad_norm: float | None) -> float:
    """Backward, clip and one optimizer step; returns the gradient norm before clipping."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm is not None and params:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        grad_norm = float(sum(float(p.grad.detach().pow(2).sum()) for p in params) ** 0.5)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _opd_metrics(batch, teacher_BT, teacher_s: float) -> dict[str, float]:
    """How far the student is from its teachers on its own tokens (mean log pi_s - log pi_t)."""
    import torch

    student_BT = batch["rollout_logprobs"][:, 1:]
    taught = (batch["loss_mask"][:, 1:] > 0) & torch.isfinite(teacher_BT) & torch.isfinite(student_BT)
    gap = (student_BT - teacher_BT)[taught]
    return {"opd_reverse_kl": float(gap.mean()) if gap.numel() else math.nan,
            "opd_taught_tokens": float(taught.sum()), "teacher_s": teacher_s}  # fmt: skip
