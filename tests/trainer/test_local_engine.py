"""The local engine: a real (tiny, random) transformers model answers agent requests with token
ids and log-probabilities; as the `local:PATH` policy it runs a real episode."""

from __future__ import annotations

import json

import pytest

from kwaigym.chat.types import ChatRequest, Message, TextPart, Tool
from kwaigym.datasets import load_dataset
from kwaigym.errors import ConfigError
from kwaigym.rollout import policy_factory, rollout
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.engine.local import LocalEngine, parse_tool_calls  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def test_hermes_tool_calls_are_parsed():
    text, calls = parse_tool_calls(
        'Let me look.<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>'
    )
    assert (
        text == "Let me look."
        and calls[0].name == "bash"
        and json.loads(calls[0].arguments) == {"command": "ls"}
    )
    broken, none = parse_tool_calls("<tool_call>{not json}</tool_call>")
    assert none == [] and "not json" in broken


def test_engine_answers_with_tokens_and_logprobs(tiny):
    engine = LocalEngine(tiny, max_new_tokens=12)
    request = ChatRequest(format="openai-chat", model="m",
                          messages=[Message(role="user", content=[TextPart(text="fix the bug")])],
                          tools=[Tool(name="bash", parameters={"type": "object"})])  # fmt: skip
    answer = engine.complete(request)
    assert 1 <= len(answer.token_ids) <= 12 and len(answer.logprobs) == len(answer.token_ids)
    assert all(lp.logprob <= 0.0 for lp in answer.logprobs)
    assert answer.prompt_token_ids and answer.usage.input_tokens == len(answer.prompt_token_ids)
    prompt = engine.tokenizer.decode(answer.prompt_token_ids)
    assert prompt.startswith("<|tools|>") and "<|user|>\nfix the bug" in prompt


def test_not_a_model_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a model directory"):
        LocalEngine(tmp_path)


def test_threads_apply_while_sampling_only(tiny):
    """``threads`` holds torch's intra-op count while ``generate`` runs and puts it back; the draw is
    the same as with torch's own setting (same seed)."""
    default = LocalEngine(tiny, max_new_tokens=8, seed=3)
    engine = LocalEngine(tiny, max_new_tokens=8, seed=3, threads=1)
    seen, generate = [], engine.model.generate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return generate(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine.model.generate = spy
        (ours,) = engine.sample([[5, 6, 7]])
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        del engine.model.generate
        torch.set_num_threads(before)
    (theirs,) = default.sample([[5, 6, 7]])
    assert ours.token_ids == theirs.token_ids
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        LocalEngine(tiny, threads=0)


@pytest.mark.podman
async def test_local_policy_runs_a_real_episode(tiny, backend):
    """`local:PATH` (found by entry point) drives mini on a bundled task; its calls carry token data."""
    task = load_dataset("examples").get("swe-text-wrap")
    (result,) = await rollout([task], ["mini"], policy_factory(f"local:{tiny}"), backend=backend,
                              show_progress=False)  # fmt: skip
    assert result.status in ("ok", "agent_error") and result.reward_valid and result.reward == 0.0
    assert result.calls and result.calls[0].completion.token_ids and result.calls[0].completion.logprobs


async def test_sync_from_the_shared_model_bumps_and_another_copies(tiny):
    """``sync_from`` of the engine's own model moves the version on; another model's weights are copied."""
    from transformers import AutoModelForCausalLM

    engine = LocalEngine(tiny)
    assert await engine.sync_from(engine.model) == 1
    other = AutoModelForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert await engine.sync_from(other) == 2
    assert torch.equal(next(engine.model.parameters()), next(other.parameters()))
