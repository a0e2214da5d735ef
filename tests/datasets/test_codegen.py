"""Code-generation problems and short-answer questions become output-verifier tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kwaigym.datasets import load_codegen, load_qa
from kwaigym.errors import ConfigError
from kwaigym.task import Environment, Task

FIXTURES = Path(__file__).parent / "fixtures"


def test_livecodebench_record_loads():
    """LiveCodeBench fields: JSON-text public cases plus private cases, metadata kept."""
    task = load_codegen(FIXTURES / "codegen.jsonl").get("abc301_a")
    params = task.verifier.params
    assert task.verifier.kind == "output"
    assert params["program"] == "python3 /workspace/solution.py"
    assert params["cases"] == [
        {"input": "5\nTTAAT\n", "output": "T\n"},
        {"input": "1\nA\n", "output": "A\n"},
        {"input": "3\nTTT\n", "output": "T\n"},
    ]
    assert params["mode"] == "whitespace" and params["all_or_nothing"] is False
    assert task.instruction.startswith("Takahashi and Aoki")
    assert "/workspace/solution.py" in task.instruction
    assert task.metadata["platform"] == "atcoder" and task.metadata["source"] == "codegen"


def test_codegen_runs_in_the_base_image():
    """No image and no build context: the task runs in kwaigym's base image."""
    task = load_codegen(FIXTURES / "codegen.jsonl").get("sum-two")
    assert task.environment == Environment()
    assert task.verifier.params["mode"] == "exact"  # the record's own mode wins


def test_options_apply_to_every_problem():
    """mode and all_or_nothing options set the default for every record; a mode the expected outputs
    cannot use (numeric, for words) fails at load time, naming the record."""
    dataset = load_codegen(FIXTURES / "codegen.jsonl", mode="exact", all_or_nothing=True, name="lcb")
    assert dataset.name == "lcb"
    assert dataset.get("abc301_a").verifier.params["mode"] == "exact"
    with pytest.raises(ConfigError, match=r"codegen.jsonl:1.*holds no number"):
        load_codegen(FIXTURES / "codegen.jsonl", mode="numeric")
    assert all(t.verifier.params["all_or_nothing"] for t in dataset)


def _write(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


FUNCTIONAL = {
    "question_id": "lc1",
    "question_content": "Two sum.",
    "public_test_cases": [{"input": "[1,2]\n3", "output": "[0,1]", "testtype": "functional"}],
}


def test_functional_cases_are_refused_or_skipped(tmp_path):
    """LeetCode-style functional cases fail loudly, or are skipped when asked."""
    path = _write(tmp_path, {"id": "a", "prompt": "p", "tests": [{"input": "", "output": "1"}]}, FUNCTIONAL)
    with pytest.raises(ConfigError, match=r"problems\.jsonl:2: public_test_cases\[0\]\.testtype") as info:
        load_codegen(path)
    assert info.value.task_id == "lc1"
    assert [t.id for t in load_codegen(path, skip_functional=True)] == ["a"]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"id": "a", "tests": [{"input": "", "output": ""}]}, "prompt | question_content"),
        ({"id": "a", "prompt": "p", "tests": []}, "tests"),
        ({"id": "a", "prompt": "p", "tests": [{"input": 1, "output": "1"}]}, r"tests\[0\]\.input"),
        ({"id": "a", "prompt": "p", "cases": [{"input": "1"}]}, r"cases\[0\]\.output"),
        ({"id": "a", "prompt": "p", "tests": [{"input": "", "output": ""}], "mode": "fuzzy"}, "mode"),
        (
            {
                "id": "a",
                "prompt": "p",
                "public_test_cases": "[]",
                "private_test_cases": "eJzLSM3JyQcABiwCFQ==",
            },
            "private_test_cases",
        ),
    ],
)
def test_bad_record_names_line_and_field(tmp_path, record, field):
    """A malformed problem names the file, its line and the field."""
    with pytest.raises(ConfigError, match=rf"problems\.jsonl:1: {field}"):
        load_codegen(_write(tmp_path, record))


def test_qa_loads():
    """Questions: the final message is compared with the answer; a JSON number compares numerically."""
    dataset = load_qa(FIXTURES / "qa.jsonl")
    capital, pi = dataset.get("capital"), dataset.get("pi")
    assert capital.verifier.params == {"answer": "Paris", "mode": "whitespace"}
    assert capital.solution.answer == "Paris"
    assert capital.instruction.startswith("What is the capital of France?")
    assert pi.verifier.params == {"answer": "3.142", "mode": "numeric", "rtol": 0.001}


def test_qa_bad_answer_names_the_field(tmp_path):
    """An answer that is neither text nor a number is refused."""
    with pytest.raises(ConfigError, match=r"problems\.jsonl:1: answer"):
        load_qa(_write(tmp_path, {"id": "q", "question": "?", "answer": ["a"]}))


@pytest.mark.parametrize(("loader", "file"), [(load_codegen, "codegen.jsonl"), (load_qa, "qa.jsonl")])
def test_round_trip_through_toml(loader, file):
    """Every loaded problem survives Task.to_toml / Task.from_toml unchanged."""
    for task in loader(FIXTURES / file):
        assert Task.from_toml(task.to_toml()) == task
