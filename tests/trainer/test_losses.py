"""The policy-gradient losses against loop-by-loop float64 references, values and gradients."""

from __future__ import annotations

import functools
import math

import pytest

from kwaigym.errors import ConfigError

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.losses import (  # noqa: E402
    group_advantages,
    grpo_loss,
    gspo_loss,
    icepop_mask,
    mcla_logprobs,
    opd_advantages,
    turn_gspo_loss,
)

MASK = [[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]]
TURNS = [[0, 0, 0, -1, -1, -1], [-1, -1, 0, 0, 1, 1], [0, -1, 1, 1, -1, 2]]
ADV = [1.0, -0.5, 2.0]


def batch(noise: float, seed: int = 0):
    """Float64 leaves (current log-probs), old log-probs, advantages, mask and turn ids."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 2
    old = logp + noise * torch.randn(3, 6, generator=g, dtype=torch.float64)
    return logp.requires_grad_(), old, torch.tensor(ADV), torch.tensor(MASK), torch.tensor(TURNS)


def run32(fn, logp64, old64, *args, **kwargs):
    """Run a loss in float32; return its value, metrics and the gradient wrt the log-probs."""
    logp = logp64.detach().float().requires_grad_()
    loss, metrics = fn(logp, old64.float(), *args, **kwargs)
    loss.backward()
    return loss.item(), metrics, logp.grad.double()


def surrogate(r, a, eps_low, eps_high):
    """-min(r a, clip(r) a) on scalars, with Python's min/max (no vectorised clamp)."""
    return -min(r * a, min(max(r, 1 - eps_low), 1 + eps_high) * a)


def val(x) -> float:
    """A scalar's value (a clipped term is a plain float: its gradient is zero)."""
    return x.item() if torch.is_tensor(x) else x


def ref_grpo(logp, old, mask, eps_low=0.2, eps_high=0.28, weight=None, num_tokens=None):
    total, count, clipped = 0.0, 0, 0
    for i in range(len(mask)):
        for t in range(len(mask[i])):
            if not mask[i][t]:
                continue
            count += 1
            r = torch.exp(logp[i, t] - old[i, t])
            term = surrogate(r, ADV[i], eps_low, eps_high)
            clipped += val(term) > val(-r * ADV[i])
            total = total + term * (1.0 if weight is None else weight[i][t])
    return total / (num_tokens or count), clipped / count


def ref_turns(logp, old, turns, mean, eps_low=3e-4, eps_high=4e-4):
    """Per (row, turn) ratio from explicit token lists; the loss averaged over turns."""
    losses, clipped = [], 0
    for i in range(len(MASK)):
        ids = sorted({k for k, m in zip(turns[i], MASK[i], strict=True) if k >= 0 and m})
        for k in ids:
            lr = [logp[i, t] - old[i, t] for t in range(6) if turns[i][t] == k and MASK[i][t]]
            s = torch.exp(sum(lr) / len(lr) if mean else sum(lr))
            term = surrogate(s, ADV[i], eps_low, eps_high)
            clipped += val(term) > val(-s * ADV[i])
            losses.append(term)
    return sum(losses) / len(losses), clipped / len(losses)


def assert_matches(got, ref, grad, logp):
    loss, frac = ref
    (ref_grad,) = torch.autograd.grad(loss, logp)
    assert got == pytest.approx(loss.item(), abs=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_grpo_matches_reference():
    """GRPO's value, clip fraction and gradient equal the loop reference (token-level mean)."""
    logp, old, adv, mask, _ = batch(noise=0.3)
    value, metrics, grad = run32(grpo_loss, logp, old, adv, mask)
    ref = ref_grpo(logp, old, MASK)
    assert_matches(value, ref, grad, logp)
    assert metrics["clip_frac"] == pytest.approx(ref[1]) and 0 < ref[1] < 1
    assert metrics["tokens"] == 11


def test_opd_advantages_subtract_the_reverse_kl_per_token():
    """A_{i,t} = A_i - lam (log pi_s - log pi_t) on policy tokens, 0 elsewhere; lam 0 is plain RL."""
    logp, teacher, adv, mask, _ = batch(noise=0.5, seed=3)
    student = logp.detach()
    got = opd_advantages(adv, student, teacher, mask, lam=0.5)
    for i in range(3):
        for t in range(6):
            want = ADV[i] - 0.5 * (student[i, t] - teacher[i, t]).item() if MASK[i][t] else 0.0
            assert got[i, t].item() == pytest.approx(want, abs=1e-12)
    plain = opd_advantages(adv, student, teacher, mask, lam=0.0)
    assert torch.equal(plain, torch.where(mask > 0, adv[:, None].double(), torch.zeros(())))
    with pytest.raises(ConfigError, match="lam"):
        opd_advantages(adv, student, teacher, mask, lam=-1)


def test_grpo_takes_per_token_advantages():
    """GRPO with a (B, T) advantage matches the loop reference with A_{i,t}; a broadcast per-sequence
    advantage gives exactly the (B,) result."""
    logp, old, adv, mask, _ = batch(noise=0.3)
    adv_BT = adv[:, None] + 0.1 * torch.arange(6.0)[None, :]
    value, _, grad = run32(grpo_loss, logp, old, adv_BT, mask)
    total, count = 0.0, 0
    for i in range(3):
        for t in range(6):
            if MASK[i][t]:
                count += 1
                total = total + surrogate(torch.exp(logp[i, t] - old[i, t]), adv_BT[i, t].item(), 0.2, 0.28)
    assert_matches(value, (total / count, None), grad, logp)
    assert (
        run32(grpo_loss, logp, old, adv[:, None].expand(3, 6), mask)[0]
        == run32(grpo_loss, logp, old, adv, mask)[0]
    )


def test_gspo_matches_reference():
    """GSPO is turn-level with one turn per sequence: value and gradient through the mean log-ratio."""
    logp, old, adv, mask, _ = batch(noise=1e-3)
    value, metrics, grad = run32(gspo_loss, logp, old, adv, mask)
    whole = [[0 if m else -1 for m in row] for row in MASK]
    ref = ref_turns(logp, old, whole, mean=True)
    assert_matches(value, ref, grad, logp)
    assert metrics["clip_frac"] == pytest.approx(ref[1]) and 0 < ref[1] < 1
    assert metrics["sequences"] == 3


@pytest.mark.parametrize("turn_ratio", ["mean", "sum"])
def test_turn_gspo_matches_reference(turn_ratio):
    """Turn-level GSPO, one ratio per (row, turn id), averaged over turns; value and gradient."""
    logp, old, adv, mask, turns = batch(noise=1e-3, seed=1)
    value, metrics, grad = run32(turn_gspo_loss, logp, old, adv, mask, turns, turn_ratio=turn_ratio)
    ref = ref_turns(logp, old, TURNS, mean=turn_ratio == "mean")
    assert_matches(value, ref, grad, logp)
    assert metrics["turns"] == 6 and metrics["clip_frac"] == pytest.approx(ref[1]) and 0 < ref[1] < 1


def test_turn_gspo_rejects_unknown_ratio():
    """An unknown turn_ratio is a config error that names the choices."""
    logp, old, adv, mask, turns = batch(noise=1e-3)
    with pytest.raises(ConfigError, match='"mean" or "sum"'):
        turn_gspo_loss(logp, old, adv, mask, turns, turn_ratio="geo")


LOSSES = {
    "grpo": lambda lp, old, adv, mask, turns, **kw: grpo_loss(lp, old, adv, mask, **kw),
    "gspo": lambda lp, old, adv, mask, turns, **kw: gspo_loss(lp, old, adv, mask, **kw),
    "turn_gspo": lambda lp, old, adv, mask, turns, **kw: turn_gspo_loss(lp, old, adv, mask, turns, **kw),
    "turn_gspo_sum": lambda lp, old, adv, mask, turns, **kw: turn_gspo_loss(
        lp, old, adv, mask, turns, turn_ratio="sum", **kw
    ),
}


@pytest.mark.parametrize("name", LOSSES)
def test_masked_tokens_change_nothing(name):
    """Garbage (inf, huge) at masked positions changes neither the loss nor any gradient."""
    logp, old, adv, mask, turns = batch(noise=1e-3, seed=2)
    clean = run32(lambda *a: LOSSES[name](*a, turns), logp, old, adv, mask)
    dirty_logp, dirty_old = logp.detach().clone(), old.clone()
    dirty_logp[mask == 0] = 1e4
    dirty_old[mask == 0] = -math.inf
    dirty = run32(lambda *a: LOSSES[name](*a, turns), dirty_logp, dirty_old, adv, mask)
    assert dirty[0] == clean[0] and dirty[1] == clean[1]
    assert torch.equal(dirty[2], clean[2]) and torch.all(dirty[2][mask == 0] == 0)


def test_icepop_mask_and_fraction():
    """k = exp(train_old - rollout) outside [0.5, 5] is masked; the fraction is over policy tokens."""
    k = torch.tensor([[0.4, 0.5, 1.0, 5.0, 5.1, 100.0]])
    mask, frac = icepop_mask(torch.log(k), torch.zeros(1, 6))
    assert mask.tolist() == [[0, 1, 1, 1, 0, 0]] and frac == pytest.approx(3 / 6)
    policy = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert icepop_mask(torch.log(k), torch.zeros(1, 6), mask_BT=policy)[1] == pytest.approx(1 / 4)


def test_grpo_icepop_masked_tokens_keep_their_count():
    """IcePop zeroes a token's surrogate and gradient, but the token stays in the denominator."""
    logp, old, adv, mask, _ = batch(noise=0.3, seed=3)
    keep = torch.ones(3, 6)
    keep[0, 1] = keep[1, 3] = 0
    value, metrics, grad = run32(grpo_loss, logp, old, adv, mask, icepop_BT=keep)
    assert_matches(value, ref_grpo(logp, old, MASK, weight=keep.tolist()), grad, logp)
    assert grad[0, 1] == 0 and grad[1, 3] == 0
    assert metrics["icepop_masked_frac"] == pytest.approx(2 / 11)


@pytest.mark.parametrize("name", ["gspo", "turn_gspo", "turn_gspo_sum"])
def test_ratio_losses_icepop_drops_gradient_not_value(name):
    """For (turn-)GSPO, IcePop leaves the ratio's value and removes the masked tokens' gradient only."""
    logp, old, adv, mask, turns = batch(noise=1e-3, seed=4)
    keep = torch.ones(3, 6)
    keep[1, 2] = keep[2, 3] = 0
    plain = run32(lambda *a: LOSSES[name](*a, turns), logp, old, adv, mask)
    popped = run32(lambda *a: LOSSES[name](*a, turns, icepop_BT=keep), logp, old, adv, mask)
    assert popped[0] == pytest.approx(plain[0], abs=1e-7)
    assert popped[2][1, 2] == 0 and popped[2][2, 3] == 0
    kept = (keep == 1) & (mask == 1)
    assert torch.allclose(popped[2][kept], plain[2][kept], atol=1e-7)


def test_sum_ratio_clips_nearly_every_turn():
    """Log-ratio noise 1e-3 over 200-token turns: exp(sum) leaves GSPO's clip range for ~all turns."""
    g = torch.Generator().manual_seed(0)
    n_turns, length = 256, 200
    old = -torch.rand(n_turns, length, generator=g)
    logp = old + 1e-3 * torch.randn(n_turns, length, generator=g)
    mask, turns = torch.ones(n_turns, length), torch.zeros(n_turns, length, dtype=torch.long)

    def outside(turn_ratio):  # clipped with A>0 iff s > 1+eps_high; with A<0 iff s < 1-eps_low
        fracs = [turn_gspo_loss(logp, old, sign * torch.ones(n_turns), mask, turns, turn_ratio=turn_ratio)[1]
                 for sign in (1.0, -1.0)]  # fmt: skip
        return fracs[0]["clip_frac"] + fracs[1]["clip_frac"]

    # sum: std 1e-3 * sqrt(200) = 1.4e-2, ~35x the clip half-width; mean: std 7e-5, ~5x inside it.
    assert outside("sum") > 0.95
    assert outside("mean") < 0.01


@pytest.mark.parametrize("name", LOSSES)
def test_global_normaliser_splits_like_the_full_batch(name):
    """Halves normalised by the global count sum to the full-batch loss and gradient (FSDP's need)."""
    logp, old, adv, mask, turns = batch(noise=0.3 if name == "grpo" else 1e-3, seed=5)
    full, metrics, grad = run32(lambda *a: LOSSES[name](*a, turns), logp, old, adv, mask)
    count = {"grpo": "tokens", "gspo": "sequences"}.get(name, "turns")
    key = {"tokens": "num_tokens", "sequences": "num_sequences", "turns": "num_turns"}[count]
    parts = []
    for rows in (slice(0, 1), slice(1, 3)):
        loss = functools.partial(LOSSES[name], **{key: metrics[count]})
        parts.append(run32(loss, logp[rows], old[rows], adv[rows], mask[rows], turns[rows]))
    assert parts[0][0] + parts[1][0] == pytest.approx(full, abs=1e-6)
    assert torch.allclose(torch.cat([parts[0][2], parts[1][2]]), grad, atol=1e-7)


def test_group_advantages_exclude_invalid_rewards():
    """Invalid rewards (even NaN) stay out of the group statistics and get advantage 0."""
    rewards = torch.tensor([1.0, 0.0, float("nan"), 0.5, 2.0, 7.0])
    groups = torch.tensor([10, 10, 10, 3, 3, 4])
    valid = torch.tensor([True, True, False, True, True, True])
    adv = group_advantages(rewards, groups, valid).tolist()
    std_a = math.sqrt(((1 - 0.5) ** 2 + (0 - 0.5) ** 2) / 1)
    std_b = math.sqrt(((0.5 - 1.25) ** 2 + (2 - 1.25) ** 2) / 1)
    expected = [0.5 / std_a, -0.5 / std_a, 0.0, -0.75 / std_b, 0.75 / std_b, 0.0]
    assert adv == pytest.approx(expected, abs=1e-5)
    centred = group_advantages(rewards, groups, valid, std_normalize=False).tolist()
    assert centred == pytest.approx([0.5, -0.5, 0.0, -0.75, 0.75, 0.0])


def test_group_advantages_without_a_baseline_are_the_valid_rewards():
    """center=False (REINFORCE without a baseline) gives each valid episode its own reward, invalid 0."""
    rewards = torch.tensor([1.0, 0.0, float("nan"), 0.5])
    valid = torch.tensor([True, True, False, True])
    adv = group_advantages(rewards, torch.tensor([1, 1, 1, 2]), valid, center=False)
    assert adv.tolist() == [1.0, 0.0, 0.0, 0.5]


def test_group_advantages_of_equal_rewards_are_zero():
    """A group whose valid rewards agree carries no signal (the eps keeps it finite)."""
    adv = group_advantages(torch.ones(4), torch.zeros(4), torch.ones(4, dtype=torch.bool))
    assert adv.tolist() == [0.0] * 4


def test_mcla_averages_k_calls():
    """MCLA is the mean of K calls; K below 1 is a config error."""
    calls = iter([torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0]), torch.tensor([-2.0, -5.0])])
    assert mcla_logprobs(lambda: next(calls), 3).tolist() == [-2.0, -3.0]
    with pytest.raises(ConfigError, match="K must be at least 1"):
        mcla_logprobs(lambda: torch.zeros(1), 0)


@pytest.mark.parametrize("name", LOSSES)
def test_batch_without_policy_tokens_gives_zero(name):
    """A batch with no policy token gives a zero loss that still backpropagates (a zero gradient)."""
    logp, old, adv, mask, turns = batch(noise=1e-3)
    value, metrics, grad = run32(lambda *a: LOSSES[name](*a, turns), logp, old, adv, torch.zeros_like(mask))
    assert value == 0 and metrics["tokens"] == 0 and not grad.any()
