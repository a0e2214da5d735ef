"""LLM-as-judge: the request it builds, the answers it accepts, the reward it computes."""

from __future__ import annotations

import json

import pytest

from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import ScriptedResponder
from kwaigym.task import VerifierSpec
from kwaigym.verifiers import Attempt, get_verifier, verify
from kwaigym.verifiers.judge import LANDING_PAGE_RUBRIC, JudgeParams, build_request, parse_answer
from tests.verifiers.conftest import task_of

RUBRIC = [
    {
        "name": "correctness",
        "weight": 3,
        "description": "Does it work?",
        "anchors": {"0": "no", "5": "fully"},
    },
    {
        "name": "style",
        "weight": 1,
        "description": "Is it clean?",
        "anchors": {0: "messy", 3: "ok", 5: "clean"},
    },
]
DIMS = JudgeParams(rubric=RUBRIC).rubric


def test_request_holds_instruction_rubric_anchors_message_and_files():
    """Everything the judge needs is in one user message after a system prompt with the format."""
    request = build_request("Write fizzbuzz.", DIMS, "Done: fizzbuzz.py", [("fizzbuzz.py", "print(1)")])
    system, user = request.messages
    assert system.role == "system" and '"scores"' in system.text
    for needle in (
        "Write fizzbuzz.",
        "correctness (weight 3)",
        "0: no",
        "3: ok",
        "Done: fizzbuzz.py",
        "print(1)",
    ):
        assert needle in user.text
    assert request.params.temperature == 0.0


@pytest.mark.parametrize(
    "text",
    [
        '{"scores": {"correctness": 4, "style": 2}, "rationale": "fine"}',
        '```json\n{"scores": {"correctness": 4, "style": 2}, "rationale": "fine"}\n```',
        'Here is my grade:\n{"scores": {"correctness": 4.0, "style": 2}, "rationale": "fine"}\nThanks.',
    ],
)
def test_parse_answer_tolerates_fences_and_prose(text):
    """Plain JSON, a fenced block and JSON inside prose all parse to the same scores."""
    assert parse_answer(text, DIMS) == ({"correctness": 4.0, "style": 2.0}, "fine")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("I'd give it a 4.", "not a JSON object"),
        ('{"correctness": 4, "style": 2}', 'no "scores"'),
        ('{"scores": {"correctness": 4}}', "'style'"),
        ('{"scores": {"correctness": 6, "style": 2}}', "from 0 to 5"),
        ('{"scores": {"correctness": -1, "style": 2}}', "from 0 to 5"),
        ('{"scores": {"correctness": "4", "style": 2}}', "from 0 to 5"),
        ('{"scores": {"correctness": true, "style": 2}}', "from 0 to 5"),
    ],
)
async def test_unusable_answers_make_the_reward_invalid(text, error):
    """A missing dimension, an out-of-range or non-numeric score, or no JSON: reward_valid False."""
    task = task_of("judge", {"rubric": RUBRIC})
    result = await verify(None, task, Attempt(final_message="done"), judge=ScriptedResponder([text]))
    assert (result.reward, result.reward_valid) == (0.0, False)
    assert error in result.error and result.details["judge_answer"] == text


async def test_reward_is_the_weighted_mean_over_five():
    """(3*4 + 1*2) / (5*4) = 0.7, with per-dimension scores and the rationale kept."""
    judge = ScriptedResponder(['{"scores": {"correctness": 4, "style": 2}, "rationale": "works, messy"}'])
    task = task_of("judge", {"rubric": RUBRIC}, instruction="Write fizzbuzz.")
    result = await verify(None, task, Attempt(final_message="fizzbuzz done"), judge=judge)
    assert result.reward_valid and result.reward == pytest.approx(0.7)
    assert result.scores == {"correctness": 4.0, "style": 2.0}
    assert result.details["rationale"] == "works, messy"
    assert "fizzbuzz done" in judge.requests[0].messages[1].text


async def test_judge_is_called_as_an_auxiliary_call():
    """The judge sees a CallContext of kind auxiliary, named after the task when there is no sandbox."""
    seen = []

    def answer(request, ctx):
        seen.append(ctx)
        return json.dumps({"scores": {"correctness": 5, "style": 5}})

    result = await verify(None, task_of("judge", {"rubric": RUBRIC}), judge=ScriptedResponder(answer))
    assert result.reward == 1.0 and seen[0].kind == "auxiliary" and seen[0].episode_id == "judge-t-verify"


async def test_a_failing_judge_gives_an_invalid_reward():
    """An exception from the judge (its server down) is an invalid reward, not a crash."""

    def broken(request, ctx):
        raise ConnectionError("judge server unreachable")

    result = await verify(None, task_of("judge", {"rubric": RUBRIC}), judge=ScriptedResponder(broken))
    assert not result.reward_valid and "judge server unreachable" in result.error


def test_landing_page_rubric_is_a_valid_rubric():
    """The example rubric builds: five anchored dimensions whose weights sum to 1."""
    dims = get_verifier(
        VerifierSpec(kind="judge", params={"rubric": LANDING_PAGE_RUBRIC}), judge=object()
    ).params.rubric
    assert len(dims) == 5 and sum(d.weight for d in dims) == pytest.approx(1.0)
    assert all(set(d.anchors) == {0, 3, 5} for d in dims)


@pytest.mark.parametrize(
    ("params", "deps", "match"),
    [
        ({"rubric": RUBRIC}, {}, "needs a judge model"),
        ({"rubric": []}, {"judge": object()}, "non-empty list"),
        ({"rubric": [{"name": "a", "weight": 0}]}, {"judge": object()}, "weight must be positive"),
        ({"rubric": [{"name": "a", "anchors": {"7": "x"}}]}, {"judge": object()}, "scores 0-5"),
        ({"rubric": [{"name": "a"}, {"name": "a"}]}, {"judge": object()}, "unique"),
        ({"rubric": [{"name": "a", "wieght": 1}]}, {"judge": object()}, "unknown field"),
        ({"rubric": RUBRIC, "files": "index.html"}, {"judge": object()}, "list of paths"),
    ],
)
async def test_bad_judge_config_raises(params, deps, match):
    """A judge task without a judge, or with a malformed rubric, is a ConfigError naming the task."""
    with pytest.raises(ConfigError, match=match) as info:
        await verify(None, task_of("judge", params), **deps)
    assert info.value.task_id == "t-verify"
