"""SFT on kwaigym trajectories: samples from recorded runs (loss on the agent's own tokens), packed
into trees with the same loss as each sample alone, a tiny model that learns its data, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kwaigym.errors import ConfigError

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.model import load_model  # noqa: E402
from reference_trainer.rl import token_logprobs  # noqa: E402
from reference_trainer.sft import (  # noqa: E402
    SFTConfig,
    episode_order,
    main,
    packed,
    sft_loss,
    sft_samples,
    train_sft,
)
from reference_trainer.tokenizer import byte_tokenizer  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "trajectory" / "fixtures"
TOKENIZER = byte_tokenizer()


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def test_samples_keep_good_episodes_and_mask_all_but_the_agents_tokens():
    samples, report = sft_samples(records("mini-oracle") + records("claude-code-oracle"), TOKENIZER)
    assert len(samples) == 3 and report.invalid_episodes == 0
    for s in samples:
        masked = [t for t, m in zip(s.input_ids, s.loss_mask, strict=True) if m]
        assert 0 < len(masked) < len(s.input_ids) / 5  # the prompt, tools and tool output are context
    assert sft_samples(records("mini-oracle"), TOKENIZER, min_reward=2.0)[0] == []
    failed = [r | {"reward": 0.0} for r in records("mini-oracle")]
    assert sft_samples(failed, TOKENIZER)[0] == []


def test_samples_come_in_episode_order_whatever_order_the_run_finished_in():
    """A run directory lists episodes as they finished; SFT data (so the packing, so the model) must
    not depend on it."""
    mini, claude = records("mini-oracle"), records("claude-code-oracle")
    forward, _ = sft_samples(mini + claude, TOKENIZER)
    backward, _ = sft_samples(claude + mini, TOKENIZER)
    assert [s.input_ids for s in forward] == [s.input_ids for s in backward]
    assert sorted([mini[0], claude[0]], key=episode_order) == [claude[0], mini[0]]  # by task id


def test_packing_groups_in_order_under_the_budget():
    samples, _ = sft_samples(records("mini-oracle") * 3, TOKENIZER)
    n = len(samples[0].input_ids)
    assert [len(g) for g in packed(samples, 2 * n)] == [2, 1]
    assert [len(g) for g in packed(samples, n - 1)] == [1, 1, 1]  # a long sample is a batch of its own


def test_packed_loss_is_the_mean_nll_of_each_sample_alone():
    samples, _ = sft_samples(records("mini-oracle") * 2, TOKENIZER)
    samples[1].loss_mask = [0] * 600 + samples[1].loss_mask[600:]  # two different masks
    model = load_model("tiny-dense", vocab_size=len(TOKENIZER))
    with torch.no_grad():
        loss, count = sft_loss(model, samples)
        linear = [token_logprobs(model, torch.tensor([s.input_ids]), None)[0] for s in samples]
    total, tokens = 0.0, 0
    for s, logp in zip(samples, linear, strict=True):
        mask = torch.tensor(s.loss_mask[1:], dtype=torch.float32)
        total, tokens = total - float((logp * mask).sum()), tokens + int(mask.sum())
    assert count == tokens and abs(float(loss) - total / tokens) < 1e-5 * abs(total / tokens)


def test_a_tiny_model_learns_its_sft_data():
    model = load_model("tiny-dense", vocab_size=len(TOKENIZER), seed=1)
    config = SFTConfig(lr=3e-3, epochs=12, max_tokens=4096)
    history = train_sft(model, TOKENIZER, records("mini-oracle"), config, log=lambda _: None)
    assert len(history) == 12 and history[-1]["loss"] < 0.6 * history[0]["loss"], history
    assert not model.training


def test_bad_input_is_refused():
    model = load_model("tiny-dense", vocab_size=len(TOKENIZER))
    with pytest.raises(ConfigError, match="no episode with a valid reward"):
        train_sft(model, TOKENIZER, [], SFTConfig())
    with pytest.raises(ConfigError, match="epochs"):
        SFTConfig(epochs=0)


def test_cli_trains_and_exports(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(FIXTURES / "mini-oracle.jsonl", run / "episodes.jsonl")
    out = tmp_path / "out"
    assert main(["--model", "tiny-dense", "--episodes", str(run), "--out", str(out), "--lr", "1e-3"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out / "final").config.vocab_size == len(TOKENIZER)
    assert len((out / "sft_metrics.jsonl").read_text().splitlines()) == 1
    assert main(["--model", "tiny-dense", "--episodes", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no episodes.jsonl" in capsys.readouterr().err
