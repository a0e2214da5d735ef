"""verify(): kinds by name, configuration errors raised, every other failure an invalid reward."""

from __future__ import annotations

import asyncio
import time

import pytest

from kwaigym.errors import ConfigError, SandboxGone
from kwaigym.task import VerifierSpec
from kwaigym.verifiers import Attempt, VerifierResult, available, get_verifier, registry, verify
from kwaigym.verifiers.script import RewardFileError, reward_from
from tests.verifiers.conftest import task_of


def test_builtin_kinds_and_suggestions():
    """The four kinds are registered; an unknown kind lists them and suggests the closest."""
    assert {"script", "swe", "output", "judge"} <= set(available())
    with pytest.raises(ConfigError, match="Did you mean 'script'"):
        get_verifier(VerifierSpec(kind="scrpt"))


async def test_unknown_kind_and_bad_params_name_the_task():
    """verify raises ConfigError with the task's id for an unknown kind or a misspelt param."""
    with pytest.raises(ConfigError, match=r"\[task t-verify\].*no verifier kind 'swee'"):
        await verify(None, task_of("swee"))
    with pytest.raises(ConfigError, match=r"\[task t-verify\].*unknown param\(s\) test_comand"):
        await verify(
            None, task_of("swe", {"test_comand": "pytest", "parser": "pytest", "fail_to_pass": ["a"]})
        )
    with pytest.raises(ConfigError, match="parser"):
        await verify(None, task_of("swe", {"test_command": "x", "parser": "nose", "fail_to_pass": ["a"]}))
    with pytest.raises(ConfigError, match="at least one test"):
        await verify(None, task_of("swe", {"test_command": "x", "parser": "go"}))


async def test_a_kind_that_runs_in_the_sandbox_needs_one():
    """Calling a sandbox kind with sandbox=None is a usage error, not a zero reward."""
    with pytest.raises(ConfigError, match="runs in the sandbox"):
        await verify(None, task_of("script"))


class _Fake:
    """A registered kind whose behaviour a test picks: return, raise, hang."""

    kind = "fake"
    behaviour = "ok"

    def __init__(self, spec, judge=None):
        self.judge = judge

    async def verify(self, sandbox, task, attempt):
        if self.behaviour == "raise":
            raise KeyError("bug in the verifier")
        if self.behaviour == "gone":
            raise SandboxGone("the sandbox's container is gone", episode_id="ep")
        if self.behaviour == "garbage":
            return {"reward": 1.0}
        if self.behaviour == "own-timeout":
            raise TimeoutError("a socket timed out")
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if self.behaviour == "stubborn":  # ignores its first cancellation
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(3600)
        return VerifierResult(reward=0.5, reward_valid=True, details={"judge": self.judge})


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(registry, "available", lambda: {"fake": _Fake})
    return _Fake


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("raise", "fake verifier failed: KeyError"),
        ("gone", "SandboxGone: the sandbox's container is gone"),
        ("own-timeout", "fake verifier failed: TimeoutError: a socket timed out"),
        ("garbage", "fake verifier returned dict, not a result"),
    ],
)
async def test_crashing_verifier_or_lost_sandbox_gives_invalid_reward(fake, monkeypatch, behaviour, error):
    """An exception inside a verifier becomes reward_valid False with the error, never a raise."""
    monkeypatch.setattr(fake, "behaviour", behaviour)
    result = await verify(None, task_of("fake"))
    assert (result.reward, result.reward_valid) == (0.0, False) and error in result.error


@pytest.mark.parametrize("behaviour", ["hang", "stubborn"])
async def test_timeout_gives_invalid_reward_and_never_hangs(fake, monkeypatch, behaviour):
    """A verifier past its timeout is cancelled (abandoned if it will not stop): invalid, promptly."""
    monkeypatch.setattr(fake, "behaviour", behaviour)
    monkeypatch.setattr(registry, "_CANCEL_GRACE_S", 0.5)
    started = time.monotonic()
    result = await verify(None, task_of("fake", timeout_s=0.3))
    assert not result.reward_valid and "ran past its timeout of 0.3s" in result.error
    assert time.monotonic() - started < 2 and result.duration_s < 2


ENTRY_POINT_VERIFIER = """
from kwaigym.verifiers import VerifierResult

class Constant:
    kind = "constant"

    def __init__(self, spec):
        self.value = spec.params["value"]

    async def verify(self, sandbox, task, attempt):
        return VerifierResult(reward=self.value, reward_valid=True)
"""


async def test_a_kind_registered_by_entry_point(tmp_path, monkeypatch):
    """A package that declares a `kwaigym.verifiers` entry point adds a kind, no core change."""
    (tmp_path / "kwfake_verifier.py").write_text(ENTRY_POINT_VERIFIER)
    info = tmp_path / "kwfake-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kwfake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kwaigym.verifiers]\nconstant = kwfake_verifier:Constant\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "constant" in available()
    result = await verify(None, task_of("constant", {"value": 0.25}))
    assert (result.reward, result.reward_valid) == (0.25, True)
    with pytest.raises(ConfigError, match=r"\[task t-verify\].*'constant' could not be built: KeyError"):
        await verify(None, task_of("constant", {}))


async def test_deps_reach_only_kinds_that_name_them(fake):
    """A dependency a kind names is handed over; others are dropped, so one set serves mixed kinds."""
    result = await verify(None, task_of("fake"), Attempt(), judge="J", unrelated=1)
    assert result.reward == 0.5 and result.details["judge"] == "J"


def test_invalid_results_have_zero_reward_and_an_error():
    """The result type refuses an invalid reward that is not 0.0 or does not say why."""
    with pytest.raises(ValueError):
        VerifierResult(reward=1.0, reward_valid=False, error="x")
    with pytest.raises(ValueError):
        VerifierResult(reward=0.0, reward_valid=False)
    with pytest.raises(ValueError):
        VerifierResult(reward=float("nan"), reward_valid=True)


@pytest.mark.parametrize(
    ("txt", "js", "code", "expected"),
    [
        ("1\n", None, 1, (1.0, {}, "reward.txt")),
        (" 0.25 ", None, 0, (0.25, {}, "reward.txt")),
        (None, '{"reward": 0.5, "style": 1}', 0, (0.5, {"reward": 0.5, "style": 1.0}, "reward.json")),
        (None, '{"a": 1, "b": 0}', 0, (0.5, {"a": 1.0, "b": 0.0}, "reward.json")),
        (None, None, 0, (1.0, {}, "exit code")),
        (None, None, 2, (0.0, {}, "exit code")),
    ],
)
def test_reward_files(txt, js, code, expected):
    """reward.txt, then reward.json (its reward or the mean), then the exit code decide."""
    assert reward_from(txt, js, code) == expected


@pytest.mark.parametrize(
    ("txt", "js"),
    [("PASS", None), ("", None), ("nan", None), (None, "[1]"), (None, "{not json"), (None, '{"a": "x"}'),
     (None, "{}"), (None, '{"a": true}')],
)  # fmt: skip
def test_garbage_reward_files_are_refused(txt, js):
    """A reward file that is not a finite number (or an object of them) is an error, not a zero."""
    with pytest.raises(RewardFileError):
        reward_from(txt, js, 0)
