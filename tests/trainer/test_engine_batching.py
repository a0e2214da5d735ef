"""Batched sampling of the local engine: one ``generate`` for many prompts, each row cut at its own
end, log-probs of the policy's own distribution, the dynamic batcher, and in-place weight updates."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kwaigym.chat.types import ChatRequest, Message, TextPart
from kwaigym.errors import ConfigError
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.engine.local import LocalEngine, SampleParams  # noqa: E402

GREEDY = SampleParams(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)  # the same random weights every run
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def engine(tiny):
    return LocalEngine(tiny, max_new_tokens=16)


@pytest.fixture(scope="module")
def prompts(engine):
    texts = ("def f(x):", "Run the tests in /workspace and fix the bug.", '{"name"')
    prompts = [engine.tokenizer.encode(t) for t in texts]
    assert len({len(p) for p in prompts}) == 3  # different lengths: left padding is exercised
    return prompts


def _forward_logprobs(engine, sample, temperature=1.0):
    """log p(token) of each completion token, from one forward pass over prompt + completion."""
    ids = torch.tensor([list(sample.prompt_ids) + list(sample.token_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(ids).logits[0].float() / temperature, -1)
    start = len(sample.prompt_ids) - 1
    return [float(logp[start + i, t]) for i, t in enumerate(sample.token_ids)]


def _close(a, b, tol=1e-4):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _count_generate(engine):
    """Record the batch size of every ``generate`` call of ``engine``'s model."""
    sizes, original = [], engine.model.generate

    def counting(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    engine.model.generate = counting
    return sizes


def _request(text, max_tokens=8):
    from kwaigym.chat.types import SamplingParams

    return ChatRequest(
        format="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart(text=text)])],
        params=SamplingParams(max_tokens=max_tokens),
    )


def test_batched_greedy_equals_one_by_one(engine, prompts):
    """Left-padded rows sample what each prompt samples alone (same ids, same log-probs)."""
    batch = engine.sample(prompts, GREEDY)
    for prompt, row in zip(prompts, batch, strict=True):
        (alone,) = engine.sample([prompt], GREEDY)
        assert row.prompt_ids == tuple(prompt) and row.token_ids == alone.token_ids
        assert len(row.token_ids) == 12 and _close(row.logprobs, alone.logprobs)


@pytest.mark.parametrize(
    "params",
    [
        GREEDY,
        SampleParams(temperature=0.7, max_new_tokens=10),
        SampleParams(temperature=1.0, top_p=0.5, max_new_tokens=10),
    ],
)
def test_logprobs_are_the_policy_distribution(engine, prompts, params):
    """Log-probs equal a forward pass at the temperature (1 when greedy); top-p does not renormalise them."""
    for sample in engine.sample(prompts, params):
        expected = _forward_logprobs(engine, sample, params.temperature or 1.0)
        assert sample.token_ids and _close(sample.logprobs, expected)


def test_rows_keep_their_own_token_limit(engine, prompts):
    """One generate runs to the longest limit; each row is cut at its own, as a prefix of the long run."""
    full = engine.sample([prompts[0]], SampleParams(temperature=0, max_new_tokens=9))[0]
    limits = [2, 5, 9]
    rows = engine.sample([prompts[0]] * 3, [SampleParams(temperature=0, max_new_tokens=n) for n in limits])
    for n, row in zip(limits, rows, strict=True):
        assert (
            row.token_ids == full.token_ids[:n] and len(row.logprobs) == n and row.finish_reason == "length"
        )


def test_stop_string_cuts_the_completion(engine, prompts):
    """The completion ends at the first stop string: cut from the text, finish reason ``stop``."""
    for prompt in prompts:  # a stop string the greedy completion reaches: a printable token after the first
        free = engine.sample([prompt], GREEDY)[0]
        pieces = [engine.tokenizer.decode([t], skip_special_tokens=True).strip() for t in free.token_ids]
        good = [i for i, p in enumerate(pieces) if i >= 1 and p and p.isascii() and p.isprintable()]
        if good:
            index, stop = good[0], pieces[good[0]]
            break
    else:
        pytest.fail("no printable token in the greedy completions")
    (cut,) = engine.sample([prompt], SampleParams(temperature=0, max_new_tokens=12, stop=["NEVER", stop]))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]
    assert 1 <= len(cut.token_ids) <= index + 1 and cut.token_ids == free.token_ids[: len(cut.token_ids)]
    assert len(cut.logprobs) == len(cut.token_ids)


def test_tiny_top_p_draws_the_greedy_tokens(engine, prompts):
    """With top_p close to 0 only the most likely token is left to draw."""
    greedy = engine.sample(prompts, GREEDY)
    nucleus = engine.sample(prompts, SampleParams(temperature=1.0, top_p=1e-6, max_new_tokens=12))
    assert [s.token_ids for s in nucleus] == [s.token_ids for s in greedy]


def test_top_logprobs_are_sorted_and_include_greedy_choice(engine, prompts):
    """``top_logprobs`` alternatives come most likely first; a greedy token is the first of them."""
    (sample,) = engine.sample([prompts[0]], SampleParams(temperature=0, max_new_tokens=6, top_logprobs=3))
    assert len(sample.top_logprobs) == 6
    for token, logprob, top in zip(sample.token_ids, sample.logprobs, sample.top_logprobs, strict=True):
        assert len(top) == 3 and top[0][0] == token and abs(top[0][1] - logprob) < 1e-6
        assert top[0][1] >= top[1][1] >= top[2][1]


def test_bad_sampling_params_are_refused():
    """Out-of-range sampling parameters are a ConfigError naming the parameter."""
    for bad in ({"top_p": 0.0}, {"temperature": -0.5}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SampleParams(**bad)


def test_concurrent_completes_share_one_generate(tiny):
    """Calls from several threads within the batch window are sampled in one generate."""
    engine = LocalEngine(tiny, max_new_tokens=8, batch_window_s=2.0, max_batch_size=4)
    sizes = _count_generate(engine)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(engine.complete, [_request(f"task {i}") for i in range(4)]))
    assert sizes == [4] and all(a.token_ids and len(a.logprobs) == len(a.token_ids) for a in answers)
    assert engine.batcher._worker is None or not engine.batcher._queue  # the worker goes when idle


async def test_concurrent_coroutines_share_one_generate(tiny):
    """``acomplete`` from several coroutines batches too (a batch closes when it is full)."""
    engine = LocalEngine(tiny, max_new_tokens=8, batch_window_s=2.0, max_batch_size=3)
    sizes = _count_generate(engine)
    answers = await asyncio.gather(*(engine.acomplete(_request(f"task {i}")) for i in range(3)))
    assert sizes == [3] and all(a.prompt_token_ids and a.token_ids for a in answers)


def test_a_failing_generate_reaches_every_waiter(tiny):
    """An engine error is raised in every call of the batch; nothing hangs."""
    engine = LocalEngine(tiny, max_new_tokens=8, batch_window_s=2.0, max_batch_size=2)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    engine.model.generate = broken
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(engine.complete, _request(f"task {i}")) for i in range(2)]
        for future in futures:
            with pytest.raises(RuntimeError, match="out of memory"):
                future.result(timeout=30)


def test_update_weights_changes_outputs_and_version(tiny, prompts):
    """New tensors are copied in place under the lock: greedy output changes, the version moves on."""
    engine = LocalEngine(tiny, max_new_tokens=12)
    before = engine.sample(prompts, GREEDY)
    assert engine.weights_version == 0 and before[0].weights_version == 0
    head = engine.model.state_dict()["lm_head.weight"]
    generator = torch.Generator().manual_seed(1)
    assert engine.update_weights({"lm_head.weight": torch.randn(head.shape, generator=generator)}) == 1
    after = engine.sample(prompts, GREEDY)
    assert [s.token_ids for s in after] != [s.token_ids for s in before] and after[0].weights_version == 1
    assert _close(after[0].logprobs, _forward_logprobs(engine, after[0]))
    with pytest.raises(ConfigError, match="no lm_head.bias"):
        engine.update_weights({"lm_head.bias": torch.zeros(3)})
    with pytest.raises(ConfigError, match="shape"):
        engine.update_weights({"lm_head.weight": torch.zeros(3, 3)})
    assert engine.weights_version == 1


def test_from_model_shares_the_trainers_model(engine, prompts):
    """An engine on an already loaded model sees its in-place changes; ``update_weights()`` just counts."""
    shared = LocalEngine.from_model(engine.model, engine.tokenizer, max_new_tokens=12, name="policy")
    assert shared.name == "policy" and shared.model is engine.model
    assert shared.sample(prompts, GREEDY) == engine.sample(prompts, GREEDY)
    assert shared.update_weights() == 1 and shared.weights_version == 1
    assert isinstance(shared.lock, type(threading.Lock()))
