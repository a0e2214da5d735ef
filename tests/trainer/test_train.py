"""The reference RL loop end to end: real episodes with a tiny preset model, TensorBoard metrics,
checkpoints, resume, the Hugging Face export; and the loop's refusals of bad input."""

from __future__ import annotations

import json

import pytest

from kwaigym.errors import ConfigError

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("tensorboard", reason="the trainer extra (tensorboard) is not installed")
from reference_trainer.rl import RLConfig  # noqa: E402
from reference_trainer.train import TrainConfig, main, parse_args, tasks_for_step, train  # noqa: E402


def _config(out, steps, **kwargs):
    rl = RLConfig(group_size=2, max_new_tokens=8, concurrency=2, lr=1e-3)
    return TrainConfig(model="tiny-dense", out=out, tasks=("swe-semver",), steps=steps, rl=rl, **kwargs)


def _scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.podman
async def test_train_logs_checkpoints_exports_and_resumes(tmp_path, backend):
    from transformers import AutoModelForCausalLM

    history = await train(_config(tmp_path, 2, save_every=1), backend=backend)
    assert [h["step"] for h in history] == [1, 2]
    assert all(h["episodes"] == 2 and h["reward_valid_frac"] == 1.0 for h in history)
    assert all(h["policy_tokens"] > 0 and h["train_tokens_per_s"] > 0 for h in history), history
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and "kl_rollout" in lines[0] and "clip_frac" in lines[0]
    assert [s for s, _ in _scalars(tmp_path / "tensorboard", "reward_mean")] == [1, 2]
    assert [s for s, _ in _scalars(tmp_path / "tensorboard", "icepop_masked_frac")] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    weights = {k: v.clone() for k, v in final.state_dict().items()}

    # the same command again with more steps: resumes from step 2 and runs step 3 only
    history = await train(_config(tmp_path, 3), backend=backend)
    assert [h["step"] for h in history] == [3]
    assert (tmp_path / "checkpoints" / "step_000003").is_dir()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    # a finished run does nothing more, and the export is that of the last step
    assert await train(_config(tmp_path, 3), backend=backend) == []
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "final").state_dict()
    assert set(again) == set(weights)


def test_tasks_for_step_takes_windows_in_turn():
    tasks = ["a", "b", "c"]
    assert [tasks_for_step(tasks, s, 2) for s in range(3)] == [["a", "b"], ["c", "a"], ["b", "c"]]
    assert tasks_for_step(tasks, 5, 0) == tasks and tasks_for_step(tasks, 1, 7) == tasks


async def test_bad_input_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="no task 'no-such-task'"):
        await train(TrainConfig(model="tiny-dense", out=tmp_path, tasks=("no-such-task",)))
    with pytest.raises(ConfigError, match="neither a model directory"):
        await train(TrainConfig(model=str(tmp_path / "nowhere"), out=tmp_path))
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        TrainConfig(model="tiny-dense", out=tmp_path, steps=0)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "initial").exists()


def test_cli_sets_the_estimator_and_updates(tmp_path):
    """--advantage and --updates reach the RL config; --updates 0 is a config error (exit 2)."""
    config = parse_args(["--model", "tiny-dense", "--out", str(tmp_path), "--advantage", "reinforce",
                         "--updates", "8"])  # fmt: skip
    assert (config.rl.advantage, config.rl.updates) == ("reinforce", 8)
    assert main(["--model", "tiny-dense", "--out", str(tmp_path), "--updates", "0"]) == 2


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    assert main(["--model", "no-such-preset", "--out", str(tmp_path)]) == 2
    assert "no-such-preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])  # --model is required: argparse exits
