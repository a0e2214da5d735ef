"""Presets, model loading, sequence log-probs, and the MCLA variance demonstration on a noisy tiny MoE."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kwaigym.errors import ConfigError  # noqa: E402
from reference_trainer.losses import mcla_logprobs  # noqa: E402
from reference_trainer.model import PRESETS, load_model, sequence_logprob, stochastic_routing  # noqa: E402

from .tiny_model import build_tiny_model  # noqa: E402

REPS = 128  # independent repetitions, run as the rows of one batch (the jitter is drawn per row)
KS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def moe():
    return load_model("tiny-moe")


def _batch(vocab: int, reps: int = REPS, length: int = 24):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, length), generator=gen).expand(reps, -1).contiguous()
    mask = torch.ones_like(ids)
    mask[:, :6] = 0  # a prompt, not scored
    return ids, mask


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_and_run_forward(name):
    model = load_model(name, vocab_size=300)
    assert model.config.vocab_size == 300
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 10, 300)
    assert torch.isfinite(logits).all()
    same = load_model(name, vocab_size=300)
    other = load_model(name, vocab_size=300, seed=1)
    p, q, r = (next(m.parameters()) for m in (model, same, other))
    assert torch.equal(p, q) and not torch.equal(p, r)


def test_tiny_moe_is_a_qwen3_moe_with_routers():
    model = load_model("tiny-moe")
    assert model.config.model_type == "qwen3_moe"
    assert model.config.num_experts == 4 and model.config.num_experts_per_tok == 2


def test_load_model_from_directory_and_errors(tmp_path):
    model = load_model(build_tiny_model(tmp_path / "m"), dtype=torch.bfloat16)
    assert model.config.model_type == "llama" and next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError):
        load_model("no-such-preset")
    with pytest.raises(ConfigError):
        load_model(tmp_path / "m", vocab_size=10)


def test_sequence_logprob_sums_next_token_logprobs():
    model = load_model("tiny-dense")
    ids = torch.randint(0, 512, (2, 7))
    mask = torch.zeros_like(ids)
    mask[0, 3] = 1
    mask[1, 4:] = 1
    with torch.no_grad():
        got = sequence_logprob(model, ids, mask)
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
    want0 = logp[0, 2, ids[0, 3]]
    want1 = sum(logp[1, t - 1, ids[1, t]] for t in range(4, 7))
    torch.testing.assert_close(got, torch.stack([want0, want1]))
    with pytest.raises(ConfigError):
        sequence_logprob(model, ids, torch.ones_like(ids))  # position 0 has no prediction


def test_stochastic_routing_needs_a_moe_and_restores_the_forward(moe):
    with pytest.raises(ConfigError), stochastic_routing(load_model("tiny-dense")):
        pass
    ids, mask = _batch(512, reps=2)
    with torch.no_grad():
        before = sequence_logprob(moe, ids, mask)
        with stochastic_routing(moe, noise=0.5, generator=torch.Generator().manual_seed(0)) as n:
            assert n == moe.config.num_hidden_layers
            noisy = sequence_logprob(moe, ids, mask)
        after = sequence_logprob(moe, ids, mask)
    assert torch.equal(before, after)
    assert not torch.allclose(noisy, before)


def test_deterministic_forward_makes_mcla_pointless(moe):
    ids, mask = _batch(512, reps=4)
    with torch.no_grad():
        first = sequence_logprob(moe, ids, mask)
        for _ in range(3):
            assert torch.equal(sequence_logprob(moe, ids, mask), first)  # zero call-to-call variance
        for K in KS:
            torch.testing.assert_close(mcla_logprobs(lambda: sequence_logprob(moe, ids, mask), K), first)


def test_mcla_variance_falls_as_one_over_k_under_routing_noise(moe):
    ids, mask = _batch(512)
    with torch.no_grad():
        deterministic_var = sequence_logprob(moe, ids, mask).var().item()  # row-to-row float jitter only
        with stochastic_routing(moe, noise=0.5, generator=torch.Generator().manual_seed(0)):
            two_calls = sequence_logprob(moe, ids[:1], mask[:1]), sequence_logprob(moe, ids[:1], mask[:1])
            assert not torch.equal(*two_calls)  # the same prefill gives different log-probs
            var = {K: mcla_logprobs(lambda: sequence_logprob(moe, ids, mask), K).var().item() for K in KS}
    assert var[1] > 1e3 * max(deterministic_var, 1e-12)
    assert var[8] < var[1] / 4
    for small, big in zip(KS, KS[1:], strict=False):
        assert var[big] < 0.8 * var[small]  # monotone, with room for the sampling error of 128 draws
