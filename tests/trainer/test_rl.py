"""The reference RL loop: a real rollout with the tiny local model on bundled tasks, then an update;
and the update path on its own, with synthetic nonzero advantages, for both losses."""

from __future__ import annotations

import math

import pytest

from kwaigym.datasets import load_dataset
from kwaigym.errors import ConfigError
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.data import Sample, collate  # noqa: E402
from reference_trainer.rl import RLConfig, known_logprobs, make_trainer, rl_step, token_logprobs, update  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def _snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def _changed(model, before) -> bool:
    return any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))


def _sample(ids, mask, turns, lps, reward, group, episode):
    known = [lp for lp, m in zip(lps, mask, strict=True) if m]
    return Sample(input_ids=ids, loss_mask=mask, turn_ids=turns, rollout_logprobs=lps,
                  has_rollout_logprobs=bool(known) and not any(math.isnan(x) for x in known),
                  reward=reward, reward_valid=True, group_id=group, episode_id=episode)  # fmt: skip


def _synthetic_batch(model):
    """Two episodes of one task (rewards 1 and 0: advantages +-0.7), one with two turns, one with
    rollout log-probs taken from the model itself and one with them unknown (NaN)."""
    a = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    b = [5, 6, 20, 21, 22, 23]
    with torch.no_grad():
        lp_a = token_logprobs(model, torch.tensor([a]), torch.ones(1, len(a), dtype=torch.long))[0].tolist()
    samples = [
        _sample(a, [0, 0, 1, 1, 1, 0, 0, 1, 1, 0], [-1, -1, 0, 0, 0, -1, -1, 1, 1, -1],
                [math.nan] + lp_a, 1.0, "t", "e1"),
        _sample(b, [0, 0, 1, 1, 1, 1], [-1, -1, 0, 0, 0, 0], [math.nan] * len(b), 0.0, "t", "e2"),
    ]  # fmt: skip
    batch = collate(samples, pad_id=0)
    return batch, known_logprobs(samples, batch["input_ids"].shape[1])


def test_config_is_validated():
    with pytest.raises(ConfigError, match="loss"):
        RLConfig(loss="ppo")
    with pytest.raises(ConfigError, match="group_size"):
        RLConfig(group_size=0)


@pytest.mark.parametrize("loss", ["turn_gspo", "grpo"])
def test_update_with_nonzero_advantages_changes_the_model(tiny, loss):
    config = RLConfig(loss=loss, lr=1e-2, max_new_tokens=8, eps_low=0.2, eps_high=0.28)
    engine, optimizer = make_trainer(tiny, config)
    batch, known = _synthetic_batch(engine.model)
    assert batch["advantages"].abs().min() > 0.5
    before = _snapshot(engine.model)
    metrics = update(engine.model, batch, config, optimizer, known_BT=known)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["policy_tokens"] == 9 and metrics["known_logprob_tokens"] == 5
    assert metrics["logprob_abs_diff_mean"] < 1e-4  # rollout log-probs = the model's own: aligned
    assert metrics["icepop_masked_frac"] == 0.0 and metrics["grad_norm"] > 0
    assert _changed(engine.model, before)
    assert not engine.model.training  # back in eval mode for sampling


def test_the_advantage_estimator_is_chosen_by_name(tiny):
    """reinforce: the failed episode gets 0 (only the success moves the policy); a bad name is refused."""
    engine, _ = make_trainer(tiny, RLConfig())
    batch, _ = _synthetic_batch(engine.model)
    assert batch["advantages"].tolist() == pytest.approx([0.7071, -0.7071], abs=1e-3)
    samples = [_sample([5, 6, 7], [0, 1, 1], [-1, 0, 0], [math.nan] * 3, r, "t", f"e{r}") for r in (1.0, 0.0)]
    assert collate(samples, pad_id=0, advantage="reinforce")["advantages"].tolist() == [1.0, 0.0]
    assert collate(samples, pad_id=0, advantage="dr_grpo")["advantages"].tolist() == [0.5, -0.5]
    with pytest.raises(ConfigError, match="advantage must be one of"):
        collate(samples, pad_id=0, advantage="ppo")
    with pytest.raises(ConfigError, match="advantage"):
        RLConfig(advantage="ppo")


def test_several_updates_per_batch_move_further(tiny):
    """updates=K takes K optimizer steps on one batch: the success's log-prob rises more than with one."""
    gains = {}
    for updates in (1, 4):
        config = RLConfig(loss="grpo", lr=1e-3, updates=updates)
        engine, optimizer = make_trainer(tiny, config)
        batch, known = _synthetic_batch(engine.model)
        ids, mask = batch["input_ids"][:1], batch["attention_mask"][:1]
        policy = batch["loss_mask"][:1, 1:] > 0
        before = token_logprobs(engine.model, ids, mask).detach()
        update(engine.model, batch, config, optimizer, known_BT=known)
        after = token_logprobs(engine.model, ids, mask).detach()
        gains[updates] = float((after - before)[policy].sum())
    assert gains[4] > gains[1] > 0, gains
    with pytest.raises(ConfigError, match="updates"):
        RLConfig(updates=0)


def test_zero_advantages_and_no_policy_tokens_do_not_crash(tiny):
    config = RLConfig(lr=1e-2)
    engine, optimizer = make_trainer(tiny, config)
    batch, known = _synthetic_batch(engine.model)
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    before = _snapshot(engine.model)
    metrics = update(engine.model, batch, config, optimizer, known_BT=known)
    assert metrics["loss"] == 0.0 and metrics["grad_norm"] == 0.0 and not _changed(engine.model, before)
    batch["loss_mask"] = torch.zeros_like(batch["loss_mask"])
    metrics = update(engine.model, batch, RLConfig(loss="grpo"), optimizer, known_BT=known)
    assert metrics["loss"] == 0.0 and metrics["policy_tokens"] == 0
    empty = update(engine.model, collate([], pad_id=0), config, optimizer)
    assert empty["updated"] == 0.0


def _round_trip_safe(engine):
    """Let the random model emit only tokens whose text re-tokenises to the same ids (a few unmerged
    capitals, and EOS): random byte-level tokens decode to invalid UTF-8, and such turns are
    (rightly) masked by the data checks, which would leave nothing to train on."""
    tok = engine.tokenizer
    allowed = {tok.convert_tokens_to_ids(c) for c in "QZJKVWXY"} | {tok.eos_token_id}
    engine.model.generation_config.suppress_tokens = [t for t in range(len(tok)) if t not in allowed]


@pytest.mark.podman
async def test_one_rl_step_on_bundled_tasks(tiny, backend):
    dataset = load_dataset("examples")
    tasks = [dataset.get("swe-semver"), dataset.get("organize-inbox")]
    config = RLConfig(group_size=2, max_new_tokens=16, lr=1e-3)
    engine, optimizer = make_trainer(tiny, config)
    _round_trip_safe(engine)
    before = _snapshot(engine.model)
    metrics = await rl_step(engine, tasks, config, backend=backend, optimizer=optimizer)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["episodes"] == 4 and metrics["reward_valid_frac"] == 1.0
    assert metrics["reward_mean"] == 0.0 and metrics["pass_rate"] == 0.0
    assert metrics["samples"] >= 4 and metrics["tokens"] > 0 and metrics["policy_tokens"] > 0
    assert metrics["data_mismatched_calls"] == 0 and metrics["known_logprob_tokens"] > 0
    assert metrics["updated"] == 1.0
    # the engine reports the policy's own log-probs (raw logits, not generate's processed scores), so
    # the trainer recomputes the same numbers and IcePop masks nothing
    assert metrics["icepop_masked_frac"] == 0.0 and metrics["logprob_abs_diff_mean"] < 1e-3, metrics
    if metrics["advantage_abs_mean"] > 0:
        assert _changed(engine.model, before)
    else:  # every reward is 0: no advantage, no update (and no weight decay)
        assert metrics["grad_norm"] == 0.0 and not _changed(engine.model, before)


def test_mcla_averages_k_extra_prefills_for_the_old_logprobs(tiny):
    """``mcla_k=4``: four no-grad prefills give the old log-probs IcePop compares with the rollout's
    (plus the training forward); with a deterministic model the step equals ``mcla_k=1``'s."""
    results = []
    for k in (1, 4):
        config = RLConfig(loss="grpo", lr=1e-2, max_new_tokens=8, mcla_k=k)
        engine, optimizer = make_trainer(tiny, config)
        batch, known = _synthetic_batch(engine.model)
        calls = []
        record = calls.append
        hook = engine.model.register_forward_hook(lambda *_, record=record: record(torch.is_grad_enabled()))
        metrics = update(engine.model, batch, config, optimizer, known_BT=known)
        hook.remove()
        assert calls.count(False) == (k if k > 1 else 0) and calls.count(True) == 1
        results.append((metrics, [p.detach().clone() for p in engine.model.parameters()]))
    (m1, p1), (m4, p4) = results
    assert m1["icepop_masked_frac"] == m4["icepop_masked_frac"] and abs(m1["loss"] - m4["loss"]) < 1e-6
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p1, p4, strict=True))
    with pytest.raises(ConfigError, match="mcla_k"):
        RLConfig(mcla_k=0)


@pytest.mark.parametrize("loss", ["turn_gspo", "grpo"])
def test_tree_update_equals_the_linear_update(tiny, loss):
    """``tree=True`` computes the rows' shared prefix once; loss, metrics and the step are the same."""
    from reference_trainer.rl import tree_token_logprobs

    outcomes = []
    for tree in (False, True):
        config = RLConfig(loss=loss, lr=1e-2, max_new_tokens=8, eps_low=0.2, eps_high=0.28, tree=tree)
        engine, _ = make_trainer(tiny, config)
        optimizer = torch.optim.SGD(engine.model.parameters(), lr=1.0)  # the step is the gradient (Adam
        batch, known = _synthetic_batch(engine.model)  # would blow up 1e-8 differences of tiny gradients)
        metrics = update(engine.model, batch, config, optimizer, known_BT=known)
        outcomes.append((metrics, [p.detach().clone() for p in engine.model.parameters()]))
    (linear, p_lin), (tree, p_tree) = outcomes
    assert abs(linear["loss"] - tree["loss"]) < 1e-6 and linear["clip_frac"] == tree["clip_frac"]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(p_lin, p_tree, strict=True))
    batch, _ = _synthetic_batch(engine.model)
    valid = batch["attention_mask"][:, 1:].bool()
    with torch.no_grad():
        expected = token_logprobs(engine.model, batch["input_ids"], batch["attention_mask"])
        got = tree_token_logprobs(engine.model, batch["input_ids"], batch["attention_mask"])
    assert got.shape == expected.shape and torch.allclose(got[valid], expected[valid], atol=1e-5)


def test_opd_pulls_towards_the_teacher_and_needs_the_grpo_loss(tiny):
    """Teacher log-probs equal to the student's change nothing; a teacher that likes the sampled
    tokens more (+1 nat each) raises every policy token's advantage by 1, so the step raises their
    log-probs more than plain RL does (to first order, at a small step); turn-GSPO refuses."""
    config = RLConfig(loss="grpo", max_new_tokens=8, opd_lambda=1.0)
    after = []
    for shift in (None, 0.0, 1.0):
        engine, _ = make_trainer(tiny, config)
        optimizer = torch.optim.SGD(engine.model.parameters(), lr=1e-3)
        batch, known = _synthetic_batch(engine.model)
        teacher = None
        with torch.no_grad():
            own = token_logprobs(engine.model, batch["input_ids"], batch["attention_mask"])
        if shift is not None:
            teacher = torch.where(known[:, 1:], batch["rollout_logprobs"][:, 1:], own) + shift
        update(engine.model, batch, config, optimizer, known_BT=known, teacher_BT=teacher)
        with torch.no_grad():
            new = token_logprobs(engine.model, batch["input_ids"], batch["attention_mask"])
        after.append(float(((new - own) * batch["loss_mask"][:, 1:]).sum()))
    plain, same, keen = after
    assert abs(plain - same) < 1e-6 and keen > plain + 1e-4, after
    with pytest.raises(ConfigError, match="loss='grpo'"):
        engine, optimizer = make_trainer(tiny, RLConfig(max_new_tokens=8))
        batch, known = _synthetic_batch(engine.model)
        update(engine.model, batch, RLConfig(), optimizer, known_BT=known, teacher_BT=torch.zeros(1))
