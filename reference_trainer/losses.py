"""Policy-gradient losses: GRPO, GSPO, turn-level GSPO, IcePop masking, group advantages, MCLA.

Every loss is a pure function of tensors and returns ``(loss, metrics)``: ``loss`` is a scalar to
call ``backward()`` on, ``metrics`` a dict of Python floats computed without gradient. Shapes are
suffixes: ``B`` sequences, ``T`` tokens (right-padded), ``N`` flat rollouts. Common inputs:

- ``logp_BT``: log-probs of the taken tokens under the current policy (requires grad);
- ``old_logp_BT``: log-probs under the policy the ratio is taken against (the old train policy,
  or the rollout policy when no recompute pass is run);
- ``adv_B``: one advantage per sequence (see :func:`group_advantages`);
- ``mask_BT``: 1 on policy-generated tokens, 0 on prompt, tool output and padding. Masked
  positions may hold any finite or infinite value: they are replaced before ``exp`` and receive a
  zero gradient;
- ``icepop_BT`` (optional): per-token weights, usually the 0/1 mask of :func:`icepop_mask`.

Choices, stated once:

- The surrogate is ``l(r, A) = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``.
- IcePop drops gradient, never the normaliser: an IcePop-masked token still counts in GRPO's token
  count (as in the IcePop paper's objective), and a sequence or turn still counts in GSPO's.
  For GRPO the weight multiplies the per-token surrogate. For (turn-)GSPO the surrogate is per
  sequence (turn), so the weight scales each token's share of the ratio's gradient and leaves
  the ratio's value alone: ``log s`` is built from ``w_t lr_t + (1 - w_t) sg(lr_t)``. This is the
  same gradient as verl's GSPO-token form with per-token weights, and the turn split does not
  depend on the IcePop mask (ROLL's pitfall of splitting a turn at a masked token is avoided).
- Log-ratios are clamped to +-``LOG_RATIO_CLAMP`` before ``exp`` (verl clamps to 20 for tokens
  and 10 for sequences), so a wildly off-policy token cannot overflow to inf; the clamp also
  stops the gradient there.
- For data parallelism, pass the global normaliser (``num_tokens``, ``num_sequences``,
  ``num_turns``): each rank's loss is then its local sum over that global count, and the sum of the
  ranks' losses (FSDP with ``set_gradient_divide_factor(1.0)``, or an all-reduce sum) equals the
  loss of the whole batch. The metrics stay local.

Limits: no KL term, no dual clip, no entropy bonus; advantages are per sequence, except GRPO's,
which may be per token (On-Policy Distillation, :func:`opd_advantages`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    import torch

LOG_RATIO_CLAMP = 20.0
"""Log-ratios beyond +-20 (ratio 4.9e8) are clamped before ``exp``."""


def _surrogate(ratio, adv, eps_low: float, eps_high: float):
    """Per-element ``-min(r A, clip(r) A)`` and where the clip was active (its gradient is zero)."""
    import torch

    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def _log_ratio(logp_BT, old_logp_BT, keep_BT):
    """``logp - old_logp`` on kept tokens, exactly 0 elsewhere (no NaN from masked garbage)."""
    import torch

    zero = torch.zeros((), dtype=logp_BT.dtype, device=logp_BT.device)
    return torch.where(keep_BT, logp_BT - old_logp_BT.detach(), zero)


def _icepop_frac(icepop_BT, keep_BT) -> float:
    kept = keep_BT.sum().clamp(min=1)
    return float(((icepop_BT.detach() == 0) & keep_BT).sum() / kept)


def grpo_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    icepop_BT: torch.Tensor | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level clipped surrogate (GRPO/PPO), normalised over all tokens of the batch.

    Formula::

        r_{i,t} = exp(logp_{i,t} - old_logp_{i,t})
        l_{i,t} = -min(r_{i,t} A_i, clip(r_{i,t}, 1-eps_low, 1+eps_high) A_i)
        L = (1/N_tok) sum_i sum_{t: m_{i,t}=1} w_{i,t} l_{i,t}

    with ``N_tok = num_tokens`` or the number of unmasked tokens here (token-level "DAPO"
    normalisation: long sequences weigh more than short ones), and ``w`` the IcePop weights
    (1 without them; masked-out tokens still count in ``N_tok``). The default clip range is DAPO's
    clip-higher 0.2/0.28; pass ``eps_high=0.2`` for the symmetric PPO clip. ``adv_B`` may also be
    per token, shape ``(B, T)`` (``A_{i,t}`` in the formula): On-Policy Distillation's dense
    advantages (:func:`opd_advantages`).

    Metrics: ``clip_frac`` (tokens whose clip was active), ``ratio_mean``, ``tokens`` and, with
    IcePop, ``icepop_masked_frac``.
    """
    import torch

    keep_BT = mask_BT > 0
    log_ratio_BT = _log_ratio(logp_BT, old_logp_BT, keep_BT).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio_BT = torch.exp(log_ratio_BT)
    adv = adv_B.detach().to(ratio_BT.dtype)
    loss_BT, clipped_BT = _surrogate(ratio_BT, adv[:, None] if adv.dim() == 1 else adv, eps_low, eps_high)
    weight_BT = keep_BT.to(loss_BT.dtype)
    if icepop_BT is not None:
        weight_BT = weight_BT * icepop_BT.detach().to(loss_BT.dtype)
    count = keep_BT.sum()
    denom = num_tokens if num_tokens is not None else count.clamp(min=1)
    loss = (loss_BT * weight_BT).sum() / denom
    with torch.no_grad():
        kept = count.clamp(min=1)
        metrics = {
            "clip_frac": float((clipped_BT & keep_BT).sum() / kept),
            "ratio_mean": float((ratio_BT * keep_BT).sum() / kept),
            "tokens": float(count),
        }
        if icepop_BT is not None:
            metrics["icepop_masked_frac"] = _icepop_frac(icepop_BT, keep_BT)
    return loss, metrics


def _grouped_ratio_loss(
    logp_BT,
    old_logp_BT,
    adv_B,
    keep_BT,
    slot_BT,
    per_row,
    *,
    mean,
    eps_low,
    eps_high,
    icepop_BT,
    denom_override,
    unit,
):
    """One clipped ratio per slot (a sequence or a turn); the shared body of (turn-)GSPO."""
    import torch

    lr_BT = _log_ratio(logp_BT, old_logp_BT, keep_BT)
    if icepop_BT is not None:  # weight each token's share of the gradient; keep the value
        w_BT = torch.where(keep_BT, icepop_BT.detach().to(lr_BT.dtype), torch.ones_like(lr_BT))
        lr_BT = w_BT * lr_BT + (1 - w_BT) * lr_BT.detach()
    n_slots = logp_BT.shape[0] * per_row
    index = slot_BT[keep_BT]
    total_S = lr_BT.new_zeros(n_slots).index_add(0, index, lr_BT[keep_BT])
    count_S = lr_BT.new_zeros(n_slots).index_add(0, index, torch.ones_like(lr_BT[keep_BT]))
    present_S = count_S > 0
    log_ratio_U = total_S[present_S]
    if mean:
        log_ratio_U = log_ratio_U / count_S[present_S]
    ratio_U = torch.exp(log_ratio_U.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    adv_S = adv_B.detach().to(ratio_U.dtype).repeat_interleave(per_row)
    loss_U, clipped_U = _surrogate(ratio_U, adv_S[present_S], eps_low, eps_high)
    units = int(present_S.sum())
    denom = denom_override if denom_override is not None else max(units, 1)
    loss = loss_U.sum() / denom  # no unit: still a zero connected to logp's graph (through index_add)
    with torch.no_grad():
        metrics = {
            "clip_frac": float(clipped_U.float().mean()) if units else 0.0,
            "ratio_mean": float(ratio_U.mean()) if units else 0.0,
            unit: float(units),
            "tokens": float(keep_BT.sum()),
        }
        if icepop_BT is not None:
            metrics["icepop_masked_frac"] = _icepop_frac(icepop_BT, keep_BT)
    return loss, metrics


def gspo_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    icepop_BT: torch.Tensor | None = None,
    num_sequences: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sequence-level clipped surrogate (GSPO, arXiv 2507.18071), averaged over sequences.

    Formula::

        s_i = exp( (1/|y_i|) sum_{t: m_{i,t}=1} (logp_{i,t} - old_logp_{i,t}) )      (length-normalised)
        L = (1/G) sum_{i: |y_i|>0} -min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)

    with ``G = num_sequences`` or the number of sequences here with at least one unmasked token.
    The gradient flows through the mean log-ratio. Default clip 3e-4/4e-4 is the paper's. IcePop
    weights scale each token's share of the gradient (see the module docstring).

    Metrics: ``clip_frac`` (sequences whose clip was active), ``ratio_mean``, ``sequences``,
    ``tokens`` and, with IcePop, ``icepop_masked_frac``.
    """
    import torch

    keep_BT = mask_BT > 0
    batch = logp_BT.shape[0]
    slot_BT = torch.arange(batch, device=logp_BT.device)[:, None].expand_as(keep_BT)
    return _grouped_ratio_loss(
        logp_BT,
        old_logp_BT,
        adv_B,
        keep_BT,
        slot_BT,
        1,
        mean=True,
        eps_low=eps_low,
        eps_high=eps_high,
        icepop_BT=icepop_BT,
        denom_override=num_sequences,
        unit="sequences",
    )


def turn_gspo_loss(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    adv_B: torch.Tensor,
    mask_BT: torch.Tensor,
    turn_ids_BT: torch.Tensor,
    *,
    turn_ratio: str = "mean",
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    icepop_BT: torch.Tensor | None = None,
    num_turns: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Turn-level GSPO: one clipped importance ratio per assistant turn, averaged over turns.

    A turn is a pair (sequence i, turn id k): the tokens of row ``i`` with ``turn_ids == k`` and
    ``mask == 1`` (``turn_ids == -1`` marks non-policy tokens; a turn need not be contiguous).
    Formula, with ``lr_t = logp_t - old_logp_t``::

        turn_ratio="mean":  s_{i,k} = exp( (1/|y_{i,k}|) sum_{t in (i,k)} lr_t )   (GSPO's normalisation)
        turn_ratio="sum":   s_{i,k} = exp( sum_{t in (i,k)} lr_t ) = prod_t r_t    (the report's product)
        L = (1/K) sum_{(i,k)} -min(s_{i,k} A_i, clip(s_{i,k}, 1-eps_low, 1+eps_high) A_i)

    with ``K = num_turns`` or the number of turns here, so every turn weighs the same whatever
    its trajectory (a 10-turn trajectory weighs 10x a 1-turn one). The turn's advantage is its
    sequence's. With ``"sum"`` the log-ratio's noise grows like the square root of the turn length, so
    GSPO's clip range (built for the mean) clips nearly every turn: give ``"sum"`` a clip range
    of its own. IcePop weights scale each token's share of the gradient (module docstring).

    Metrics: ``clip_frac`` (turns whose clip was active), ``ratio_mean``, ``turns``, ``tokens``
    and, with IcePop, ``icepop_masked_frac``.
    """
    if turn_ratio not in ("mean", "sum"):
        raise ConfigError(f'turn_gspo_loss: turn_ratio must be "mean" or "sum", got {turn_ratio!r}')
    import torch

    keep_BT = (mask_BT > 0) & (turn_ids_BT >= 0)
    turn_BT = turn_ids_BT.long().clamp(min=0)
    per_row = int(turn_BT[keep_BT].max()) + 1 if bool(keep_BT.any()) else 1
    row_BT = torch.arange(logp_BT.shape[0], device=logp_BT.device)[:, None]
    slot_BT = row_BT * per_row + turn_BT
    return _grouped_ratio_loss(
        logp_BT,
        old_logp_BT,
        adv_B,
        keep_BT,
        slot_BT,
        per_row,
        mean=turn_ratio == "mean",
        eps_low=eps_low,
        eps_high=eps_high,
        icepop_BT=icepop_BT,
        denom_override=num_turns,
        unit="turns",
    )


def opd_advantages(
    adv_B: torch.Tensor,
    student_logp_BT: torch.Tensor,
    teacher_logp_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    lam: float = 1.0,
) -> torch.Tensor:
    """On-Policy Distillation's dense advantages, ``(B, T)``: the RL advantage minus the per-token
    reverse KL estimate to the teacher on the student's own samples.

    Formula::

        A_{i,t} = A_i - lam * (log pi_student(y_t) - log pi_teacher(y_t))    where m_{i,t} = 1, else 0

    The teacher only scores the sampled tokens (log-probs, no full logits); the student's
    log-probs are those of the policy that sampled (the rollout's, or the old train policy's).
    Nothing here carries a gradient. ``lam = 0`` gives back the RL advantage. A NaN teacher
    log-prob (a row no teacher scored) leaves that token's advantage at ``A_i``.
    """
    if lam < 0:
        raise ConfigError(f"opd_advantages: lam must be >= 0, got {lam}")
    import torch

    keep_BT = mask_BT > 0
    taught_BT = keep_BT & torch.isfinite(teacher_logp_BT)
    gap_BT = torch.where(
        taught_BT, student_logp_BT - teacher_logp_BT, torch.zeros((), dtype=student_logp_BT.dtype)
    )
    adv_BT = adv_B.detach()[:, None].to(gap_BT.dtype) - lam * gap_BT.detach()
    return torch.where(keep_BT, adv_BT, torch.zeros((), dtype=adv_BT.dtype))


def icepop_mask(
    train_old_logp_BT: torch.Tensor,
    rollout_logp_BT: torch.Tensor,
    low: float = 0.5,
    high: float = 5.0,
    *,
    mask_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """IcePop's two-sided token mask on the train/rollout mismatch.

    Formula::

        k_t = exp(train_old_logp_t - rollout_logp_t)
        M_t = 1 if low <= k_t <= high else 0

    Returns ``(M_BT, masked_frac)``: the float mask (no gradient) and the fraction of tokens
    masked, over ``mask_BT``'s tokens when given, else over all. The paper's weight is
    ``k_t * M_t`` (it also corrects the mismatch); pass ``M_BT * k_BT`` as ``icepop_BT`` for
    that. Bounds [0.5, 5.0] are the implementations' (OpenRLHF, TRL's tests), unconfirmed in the
    paper itself.
    """
    import torch

    with torch.no_grad():
        k_BT = torch.exp(train_old_logp_BT.float() - rollout_logp_BT.float())
        keep_BT = (k_BT >= low) & (k_BT <= high)
        over_BT = torch.ones_like(keep_BT) if mask_BT is None else mask_BT > 0
        frac = float((~keep_BT & over_BT).sum() / over_BT.sum().clamp(min=1))
        return keep_BT.to(train_old_logp_BT.dtype), frac


def group_advantages(
    rewards_N: torch.Tensor,
    group_ids_N: torch.Tensor,
    valid_N: torch.Tensor,
    *,
    std_normalize: bool = True,
    center: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages (GRPO; Dr.GRPO with ``std_normalize=False``; REINFORCE without a
    baseline, ``A_i = R_i``, with ``center=False``).

    Formula, over the valid members V_g of each rollout's group g::

        mu_g = mean_{j in V_g} R_j
        sigma_g = sqrt( sum_{j in V_g} (R_j - mu_g)^2 / (|V_g| - 1) )     (unbiased, as verl and TRL)
        A_i = (R_i - mu_g) / (sigma_g + eps)   if std_normalize else   R_i - mu_g
        A_i = 0 for invalid rollouts (``valid`` false: no trustworthy reward)

    A group with one valid member has ``A = 0`` (it has no baseline; sigma is taken as 0).
    Invalid rewards may be NaN: they never enter the statistics.

    Without a baseline (``center=False``) only rewarded episodes move the policy: with 0/1 rewards
    that is behaviour cloning of the successes. Still an unbiased policy gradient, with more
    variance, but it never pushes down a failed episode's tokens: a near-deterministic policy
    (a small model after SFT) fails on one unlucky token, and pushing down everything it sampled
    after it, garbage that decides nothing, cost more than it taught in our runs.
    """
    import torch

    valid_N = valid_N.bool()
    if not center:
        return torch.where(valid_N, rewards_N, torch.zeros_like(rewards_N)).to(
            rewards_N.dtype if rewards_N.is_floating_point() else torch.float32
        )
    _, group_N = torch.unique(group_ids_N, return_inverse=True)
    n_groups = int(group_N.max()) + 1 if group_N.numel() else 0
    r_N = torch.where(
        valid_N, rewards_N.double(), torch.zeros((), dtype=torch.float64, device=rewards_N.device)
    )
    v_N = valid_N.double()
    count_G = r_N.new_zeros(n_groups).index_add(0, group_N, v_N)
    mean_G = r_N.new_zeros(n_groups).index_add(0, group_N, r_N) / count_G.clamp(min=1)
    dev_N = (r_N - mean_G[group_N]) * v_N
    var_G = r_N.new_zeros(n_groups).index_add(0, group_N, dev_N**2) / (count_G - 1).clamp(min=1)
    adv_N = dev_N / (var_G.sqrt()[group_N] + eps) if std_normalize else dev_N
    out_dtype = rewards_N.dtype if rewards_N.is_floating_point() else torch.float32
    return adv_N.to(out_dtype)


def mcla_logprobs(logprob_fn: Callable[[], torch.Tensor], K: int) -> torch.Tensor:
    """MCLA (report eq. 11): the mean of K calls of a log-prob function (K prefills).

    Formula::

        logp_t = (1/K) sum_{k=1..K} logp^{(k)}_t

    It averages log-probs (a geometric mean of probabilities), not probabilities. It only helps
    when the forward is stochastic (MoE routing ties, non-batch-invariant kernels); a
    deterministic forward (SGLang radix-cache hits, deterministic inference) gives K identical
    answers at K times the cost.
    """
    if K < 1:
        raise ConfigError(f"mcla_logprobs: K must be at least 1, got {K}")
    total = logprob_fn()
    for _ in range(K - 1):
        total = total + logprob_fn()
    return total / K
