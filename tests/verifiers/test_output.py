"""Output comparison (exact, whitespace, numeric) and QA answers scored from the final message."""

from __future__ import annotations

import pytest

from kwaigym.errors import ConfigError
from kwaigym.verifiers import Attempt, verify
from kwaigym.verifiers.output import compare, last_number
from tests.verifiers.conftest import task_of


@pytest.mark.parametrize(
    ("actual", "expected", "mode", "ok"),
    [
        ("42\n", "42", "exact", True),
        ("42\r\n", "42\n", "exact", True),
        ("4 2", "42", "exact", False),
        ("a  b\n c", "a b c", "exact", False),
        ("a  b\n c\n", "a b c", "whitespace", True),
        ("1 2 3", "1 2 4", "whitespace", False),
        ("The answer is 42.", "42", "numeric", True),
        ("x = 3.14159265", "3.1415926", "numeric", True),
        ("x = 3.15", "3.14", "numeric", False),
        ("total: 1,234,567 apples", "1234567", "numeric", True),
        ("-2.5e3", "-2500", "numeric", True),
        ("no digits here", "1", "numeric", False),
    ],
)
def test_compare_modes(actual, expected, mode, ok):
    """Each mode accepts what it should and says why it refuses."""
    why = compare(actual, expected, mode=mode)
    assert (why is None) is ok, why


def test_numeric_tolerances():
    """rtol and atol widen numeric equality as math.isclose does."""
    assert compare("100.5", "100", mode="numeric", rtol=0.01) is None
    assert compare("100.5", "100", mode="numeric", rtol=0.001) is not None
    assert compare("0.001", "0", mode="numeric", atol=0.01) is None


def test_last_number_reads_the_last_one():
    """The last number in a text is the answer (working comes first)."""
    assert last_number("3 + 4 = 7, so 7 * 6 = 42.") == 42.0
    assert last_number("nothing") is None


async def test_qa_answer_from_final_message():
    """A QA task is scored on the final message, without a sandbox."""
    task = task_of("output", {"answer": 42, "mode": "numeric"})
    right = await verify(None, task, Attempt(final_message="So the answer is **42**."))
    wrong = await verify(None, task, Attempt(final_message="I think it is 41."))
    assert (right.reward, right.reward_valid) == (1.0, True)
    assert (wrong.reward, wrong.reward_valid) == (0.0, True) and "41" in wrong.details["why"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "either `answer`"),
        ({"answer": "x", "program": "python3 s.py", "cases": [{"input": "", "output": ""}]}, "either"),
        ({"program": "python3 s.py"}, "at least one case"),
        ({"program": "p", "cases": [{"in": "1", "output": "1"}]}, r"cases\[0\]"),
        ({"answer": "x", "mode": "fuzzy"}, "mode"),
        ({"answer": "seven", "mode": "numeric"}, "holds no number"),
        ({"answer": "x", "answr_file": "a.txt"}, "unknown param"),
    ],
)
async def test_bad_params_raise_config_error_naming_the_task(params, match):
    """Misconfigured output tasks fail loudly, naming the task, instead of scoring 0."""
    with pytest.raises(ConfigError, match=match) as info:
        await verify(None, task_of("output", params), Attempt(final_message="x"))
    assert info.value.task_id == "t-verify"
