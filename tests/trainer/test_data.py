"""Training samples from stored episodes: chat-template tokenisation, loss masks, turn ids, engine
token checks and rollout log-probs, and collation with group advantages."""

from __future__ import annotations

import copy
import math

import pytest

from kwaigym.trajectory.export import chat_messages, chat_tools
from kwaigym.trajectory.tree import decode_calls
from tests.trainer.tiny_model import CHAT_TEMPLATE, build_tiny_model
from tests.trajectory.episodes import Loop, act, done, episode, load

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.data import collate, samples_from_episodes  # noqa: E402

TOOLS_BLOCK = "{% if tools %}<|tools|>{{ tools | tojson }}<|end|>\n{% endif %}"
TOOLS_LAST = CHAT_TEMPLATE.replace(TOOLS_BLOCK, "").replace("{% if add_generation_prompt %}", TOOLS_BLOCK
                                                            + "{% if add_generation_prompt %}")  # fmt: skip
"""The tiny template with the tools printed after the messages: rendering is not prefix-stable."""


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def tok(tiny_tokenizer):
    return copy.deepcopy(tiny_tokenizer)


def with_engine_tokens(record: dict, tok) -> dict:
    """Fill each call's token data as the local engine would: the prompt rendered with the template
    and generation header, the answer's body up to and including the end-of-turn token."""
    decoded = {c.call_id: c for c in decode_calls(record)}
    for call in record["calls"]:
        d = decoded[call["call_id"]]
        prompt = [m for g in chat_messages(d.request.messages, d.request) for m in g]
        tools = chat_tools(d.request) or None
        gen = tok.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=False)
        answer = chat_messages([d.answer], d.request)[0]
        full = tok.apply_chat_template(prompt + answer, tools=tools, tokenize=False)
        body = full[len(gen) :]
        assert body.endswith("<|end|>\n")
        ids = tok.encode(body[:-1], add_special_tokens=False)
        call["prompt_token_ids"] = tok.encode(gen, add_special_tokens=False)
        call["token_ids"] = ids
        call["logprobs"] = [-0.1 * (i + 1) for i in range(len(ids))]
    return record


def two_turns(tok, **kw) -> dict:
    loop = Loop()
    calls = [loop.step(act(1)), loop.step(done("All fixed."))]
    return with_engine_tokens(episode(calls, **kw), tok)


def spans(sample, turn):
    return [i for i, t in enumerate(sample.turn_ids) if t == turn]


def test_two_turns_mask_turn_ids_and_logprobs(tok):
    record = two_turns(tok)
    (s,), report = samples_from_episodes([record], tok)
    assert report.samples == 1 and report.mismatched_calls == 0 and report.checked_calls == 2
    assert set(s.turn_ids) == {-1, 0, 1}
    n = len(s.input_ids)
    assert len(s.loss_mask) == len(s.turn_ids) == len(s.rollout_logprobs) == n
    # each turn is one contiguous span; the loss mask is exactly the engine's tokens of each turn
    for turn, call in enumerate(record["calls"]):
        idx = spans(s, turn)
        assert idx == list(range(idx[0], idx[-1] + 1))
        k = len(call["token_ids"])
        assert [s.input_ids[i] for i in idx[:k]] == call["token_ids"]
        assert [s.loss_mask[i] for i in idx] == [1] * k + [0] * (len(idx) - k)  # trailing "\n": template
        assert s.rollout_logprobs[idx[0] : idx[0] + k] == pytest.approx(call["logprobs"])
        assert all(math.isnan(s.rollout_logprobs[i]) for i in idx[k:])
        # the engine's prompt is exactly the sequence before the turn
        assert s.input_ids[: idx[0]] == call["prompt_token_ids"]
    assert all(m == 0 for m, t in zip(s.loss_mask, s.turn_ids, strict=True) if t < 0)
    assert sum(s.loss_mask) == report.policy_tokens == sum(len(c["token_ids"]) for c in record["calls"])
    assert s.has_rollout_logprobs
    text = tok.decode([t for t, m in zip(s.input_ids, s.loss_mask, strict=True) if m])
    assert "All fixed." in text and "bash" in text and "Fix the failing test" not in text
    # the whole sequence is the template's rendering of the conversation
    assert tok.decode(s.input_ids).startswith("<|tools|>") and s.reward == 1.0 and s.reward_valid


def test_mismatched_prompt_is_counted_and_masked(tok):
    record = two_turns(tok)
    record["calls"][1]["prompt_token_ids"] = record["calls"][1]["prompt_token_ids"][:-1] + [0]
    (s,), report = samples_from_episodes([record], tok)
    assert report.mismatched_calls == 1 and report.mismatched_answers == 0
    assert all(s.loss_mask[i] == 0 for i in spans(s, 1)) and spans(s, 1)  # turn kept, not trained
    assert sum(s.loss_mask[i] for i in spans(s, 0)) == len(record["calls"][0]["token_ids"])


def test_mismatched_answer_is_counted_and_masked(tok):
    record = two_turns(tok)
    record["calls"][0]["token_ids"] = [5, *record["calls"][0]["token_ids"][1:]]
    (s,), report = samples_from_episodes([record], tok)
    assert report.mismatched_calls == 1 and report.mismatched_answers == 1
    assert all(s.loss_mask[i] == 0 for i in spans(s, 0)) and sum(s.loss_mask) > 0


def test_calls_without_engine_tokens_train_the_rendered_turn(tok):
    (s,), report = samples_from_episodes([load("mini-oracle")], tok)
    assert report.checked_calls == 0 and report.mismatched_calls == 0
    assert {t for t in s.turn_ids if t >= 0} == {0, 1}
    assert all((m == 1) == (t >= 0) for m, t in zip(s.loss_mask, s.turn_ids, strict=True))
    assert all(math.isnan(x) for x in s.rollout_logprobs) and not s.has_rollout_logprobs


def test_template_that_is_not_prefix_stable_drops_the_path(tok):
    # tools printed after the messages: no single token sequence holds every call of the path
    tok.chat_template = TOOLS_LAST
    samples, report = samples_from_episodes([load("mini-oracle")], tok)
    assert samples == [] and report.unstable_paths == 1


def test_collate_pads_and_advantages(tok):
    good = two_turns(tok, reward=1.0, episode_id="a")
    bad = two_turns(tok, reward=0.0, episode_id="b")
    invalid = two_turns(tok, reward=None, episode_id="c")
    invalid["reward_valid"] = False
    short = load("mini-oracle")  # another task, alone in its group
    samples, report = samples_from_episodes([good, bad, invalid, short], tok)
    assert report.samples == 4 and report.invalid_episodes == 1
    batch = collate(samples, pad_id=tok.pad_token_id)
    B, T = batch["input_ids"].shape
    assert B == 4 and T == max(len(s.input_ids) for s in samples)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        assert batch["input_ids"][i, :n].tolist() == s.input_ids
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert batch["attention_mask"][i].sum() == n and (batch["loss_mask"][i, n:] == 0).all()
        assert (batch["turn_ids"][i, n:] == -1).all() and batch["turn_ids"][i, :n].tolist() == s.turn_ids
        assert torch.isfinite(batch["rollout_logprobs"][i]).all()
    adv = batch["advantages"].tolist()
    assert adv[0] > 0 > adv[1] and adv[0] == pytest.approx(-adv[1])
    assert adv[2] == 0.0 and adv[3] == 0.0  # invalid reward; a group of one
    assert batch["reward_valid"].tolist() == [True, True, False, True]
    assert batch["has_rollout_logprobs"].tolist() == [True, True, True, False]
    dropped, rep = samples_from_episodes([good, invalid], tok, drop_invalid=True)
    assert len(dropped) == 1 and rep.dropped_invalid == 1
