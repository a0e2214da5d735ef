"""SWE-bench instances: the official field forms load, the Containerfile renders, errors name the line."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kwaigym.datasets import load_swebench
from kwaigym.datasets.swebench import SWEBENCH_CONDA, SWEBENCH_IMAGES, cache_dir, patched_test_files
from kwaigym.errors import ConfigError
from kwaigym.task import Task

FIXTURE = Path(__file__).parent / "fixtures" / "swebench.jsonl"
DJANGO = "django__django-11099"
REQUESTS = "psf__requests-2317"


@pytest.fixture
def dataset(tmp_path):
    return load_swebench(FIXTURE, cache=tmp_path / "cache")


def test_instances_load(dataset):
    """Each record is a task named by its instance_id, scored by the swe verifier."""
    assert dataset.name == "swebench"
    assert [t.id for t in dataset] == [DJANGO, REQUESTS]
    task = dataset.get(DJANGO)
    assert task.verifier.kind == "swe" and task.verifier.timeout_s == 1800.0
    assert task.instruction.startswith("UsernameValidator allows trailing newline")
    assert "/testbed" in task.instruction
    assert task.solution.patch.startswith("diff --git a/django/contrib/auth/validators.py")
    assert task.metadata["repo"] == "django/django" and task.metadata["version"] == "3.0"


def test_json_encoded_test_lists_are_decoded(dataset):
    """FAIL_TO_PASS / PASS_TO_PASS as JSON text (the official dataset's form) become lists."""
    params = dataset.get(DJANGO).verifier.params
    assert params["fail_to_pass"] == [
        "test_ascii_validator (auth_tests.test_validators.UsernameValidatorsTests)",
        "test_unicode_validator (auth_tests.test_validators.UsernameValidatorsTests)",
    ]
    assert params["pass_to_pass"] == [
        "test_help_text (auth_tests.test_validators.MinimumLengthValidatorTest)"
    ]
    assert dataset.get(REQUESTS).verifier.params["pass_to_pass"] == []


def test_django_runs_its_own_runner_on_the_patched_test_modules(dataset):
    """Django's tests run with runtests.py on module labels, parsed as unittest output."""
    params = dataset.get(DJANGO).verifier.params
    assert params["parser"] == "unittest"
    assert params["test_command"].startswith("python3 tests/runtests.py")
    assert params["test_command"].endswith(" auth_tests.test_validators")
    assert params["test_patch"].startswith("diff --git a/tests/auth_tests/test_validators.py")


def test_other_repositories_run_pytest_on_the_patched_test_files(dataset):
    """A repository without its own entry runs pytest on the test files of the test patch."""
    params = dataset.get(REQUESTS).verifier.params
    assert params["parser"] == "pytest"
    assert params["test_command"] == "python3 -m pytest -rA --tb=no -p no:cacheprovider test_requests.py"


def test_patched_test_files_skip_data_files():
    """Data files a test patch touches are not handed to the test runner."""
    patch = "diff --git a/t/test_a.py b/t/test_a.py\ndiff --git a/t/data.json b/t/data.json\n"
    assert patched_test_files(patch) == ["t/test_a.py"]


def test_containerfile_is_rendered_under_the_cache(dataset, tmp_path):
    """Without an image, the task builds a Containerfile rendered for the instance."""
    task = dataset.get(DJANGO)
    assert task.environment.image is None and task.environment.workdir == "/testbed"
    containerfile = task.path(task.environment.build_context) / "Containerfile"
    assert containerfile == tmp_path / "cache" / DJANGO / "Containerfile"
    text = containerfile.read_text()
    assert "ARG KWAIGYM_BASE_IMAGE\nFROM ${KWAIGYM_BASE_IMAGE}\n" in text
    assert "git clone --quiet https://github.com/django/django.git /testbed" in text
    assert "checkout --quiet d26b2424437dabeeca94d7900b37d2df4410da0c" in text
    assert "rm -rf .git && git init" in text  # the fix's later commits are gone


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_containerfile_steps_leave_the_base_commit_without_history(tmp_path):
    """The rendered steps after the clone, run on a local clone, leave the base commit's files in a
    one-commit repository: the later commit (the fix) is gone."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    _git(upstream, "init", "-q")
    (upstream / "calc.py").write_text("buggy\n")
    _git(upstream, "add", "-A")
    _git(upstream, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    base = _git(upstream, "rev-parse", "HEAD").strip()
    (upstream / "calc.py").write_text("fixed\n")
    _git(upstream, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "the fix")
    record = _record(
        instance_id="o__r-1", repo="o/r", base_commit=base, image=None, install="touch installed"
    )
    task = load_swebench(_write(tmp_path, record), cache=tmp_path / "cache").get("o__r-1")
    text = (task.path(task.environment.build_context) / "Containerfile").read_text()
    steps = [
        s.replace("\\\n", " ") for s in re.findall(r"^RUN (.*?)(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    ]
    assert steps[0] == "git clone --quiet https://github.com/o/r.git /testbed"
    testbed = tmp_path / "testbed"
    _git(tmp_path, "clone", "-q", str(upstream), str(testbed))
    for step in steps[1:]:
        subprocess.run(["bash", "-c", step], cwd=testbed, check=True, capture_output=True)
    assert (testbed / "calc.py").read_text() == "buggy\n"
    assert (testbed / "installed").exists()
    assert len(_git(testbed, "log", "--all", "--oneline").splitlines()) == 1
    assert _git(testbed, "status", "--porcelain") == ""


def test_reloading_leaves_rendered_files_alone(tmp_path):
    """A second load writes nothing when the rendered Containerfile is unchanged."""
    load_swebench(FIXTURE, cache=tmp_path)
    rendered = tmp_path / DJANGO / "Containerfile"
    before = rendered.stat().st_mtime_ns
    load_swebench(FIXTURE, cache=tmp_path)
    assert rendered.stat().st_mtime_ns == before


def test_default_cache_follows_xdg(monkeypatch, tmp_path):
    """The default cache directory is under $XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "kwaigym" / "swebench"
    task = load_swebench(FIXTURE).get(DJANGO)
    assert Path(task.root) == tmp_path / "kwaigym" / "swebench" / DJANGO


def test_an_instance_image_is_used_as_is(dataset, tmp_path):
    """An instance's image means no build and nothing rendered."""
    task = dataset.get(REQUESTS)
    assert task.environment.image == "localhost/swe/requests-2317:latest"
    assert task.environment.build_context is None and task.root is None
    assert not (tmp_path / "cache" / REQUESTS).exists()


def test_image_template_and_activate(tmp_path):
    """Official images: the template spells the id as SWE-bench does; activate enters conda."""
    dataset = load_swebench(FIXTURE, cache=tmp_path, image_template=SWEBENCH_IMAGES, activate=SWEBENCH_CONDA)
    task = dataset.get(DJANGO)
    assert task.environment.image == "docker.io/swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert task.verifier.params["test_command"].startswith(f"{SWEBENCH_CONDA} && python3 tests/runtests.py")


@pytest.mark.parametrize("task_id", [DJANGO, REQUESTS])
def test_round_trip_through_toml(dataset, task_id):
    """A loaded instance survives Task.to_toml / Task.from_toml unchanged."""
    task = dataset.get(task_id)
    assert Task.from_toml(task.to_toml()) == task


def _write(tmp_path: Path, *records) -> Path:
    path = tmp_path / "instances.jsonl"
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


def _record(**changes):
    record = json.loads(FIXTURE.read_text().splitlines()[1])
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def test_bad_json_line_names_its_number(tmp_path):
    """A line that is not JSON is named by file and line number."""
    path = _write(tmp_path, _record(), "{not json\n")
    with pytest.raises(ConfigError, match=r"instances\.jsonl:2: not JSON"):
        load_swebench(path, cache=tmp_path)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"base_commit": "main; rm -rf /"}, "base_commit"),
        ({"repo": "not a repo"}, "repo"),
        ({"FAIL_TO_PASS": "[]"}, "FAIL_TO_PASS"),
        ({"FAIL_TO_PASS": "not json"}, "FAIL_TO_PASS"),
        ({"PASS_TO_PASS": [1, 2]}, "PASS_TO_PASS"),
        ({"test_patch": None}, "test_patch"),
        ({"parser": "nose"}, "parser"),
        ({"image": None, "install": "make\nmake install"}, "install"),
    ],
)
def test_bad_field_names_line_and_field(tmp_path, changes, field):
    """A malformed instance names the file, its line, the field, and the instance."""
    path = _write(tmp_path, _record(instance_id="ok__ok-1"), _record(**changes))
    with pytest.raises(ConfigError, match=rf"instances\.jsonl:2: {field}:") as info:
        load_swebench(path, cache=tmp_path)
    assert info.value.task_id == REQUESTS
