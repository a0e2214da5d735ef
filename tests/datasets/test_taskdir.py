"""Harbor / Terminal-Bench 2 task directories: the fixture dataset loads, fields map, and every
malformed task names its file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kwaigym.datasets import load_task, load_taskdir
from kwaigym.datasets.taskdir import IGNORED
from kwaigym.errors import ConfigError
from kwaigym.task import Task

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


def make_task(root: Path, toml: str = "", *, name: str = "t1", files: dict[str, str] | None = None) -> Path:
    """A minimal valid script task at ``root/name``; ``files`` adds or replaces files (None removes)."""
    task = root / name
    base = {
        "task.toml": toml,
        "instruction.md": "Do the thing.\n",
        "environment/Dockerfile": "ARG KWAIGYM_BASE_IMAGE\nFROM ${KWAIGYM_BASE_IMAGE}\n",
        "tests/test.sh": "exit 0\n",
    }
    base.update(files or {})
    for relative, text in base.items():
        if text is None:
            continue
        (task / relative).parent.mkdir(parents=True, exist_ok=True)
        (task / relative).write_text(text)
    return task


def test_fixture_dataset_loads_in_order():
    """A directory of task directories is a dataset, its tasks sorted by directory name."""
    dataset = load_taskdir(FIXTURES)
    assert dataset.name == "tasks"
    assert [t.id for t in dataset] == ["capital-qa", "fix-add", "hello-file"]
    assert len(dataset) == 3
    assert all(t.scaffold is None for t in dataset.tasks())


def test_terminal_bench_fields_map_onto_the_task():
    """Harbor's timeouts, resources, network, metadata and solution land in the Task's fields."""
    task = load_taskdir(FIXTURES).get("hello-file")
    env = task.environment
    assert (env.cpus, env.memory_mb, env.disk_mb) == (2, 2048, 10240)
    assert env.agent_timeout_s == 600.0 and task.verifier.timeout_s == 120.0
    assert env.network == "proxy"
    assert env.workdir == "/app"  # the Dockerfile's WORKDIR, where Harbor's agent starts
    assert env.image is None and env.build_context == "environment"
    assert task.verifier.kind == "script" and task.verifier.params == {}
    assert task.metadata["difficulty"] == "easy" and task.metadata["tags"] == ["bash", "files"]
    assert task.solution.script == "solution/solve.sh" and task.solution.patch is None
    assert task.root == str(FIXTURES.resolve() / "hello-file")
    assert task.path("tests/test.sh").is_file()
    assert task.instruction.startswith("Create the file `hello.txt`")


def test_kwaigym_extensions_are_read():
    """[verifier] kind and params, [environment] workdir and setup, and solution.patch are read."""
    task = load_task(FIXTURES / "fix-add")
    assert task.verifier.kind == "swe"
    assert task.verifier.params["fail_to_pass"] == ["tests/test_calc.py::test_add"]
    assert task.environment.workdir == "/workspace"
    assert len(task.environment.setup) == 1
    assert (task.environment.memory_mb, task.environment.disk_mb) == (1024, 2048)
    assert task.solution.script is None and "+    return a + b" in task.solution.patch


def test_docker_image_replaces_the_build_and_allow_internet_opens_the_network():
    """A prebuilt docker_image is used instead of building environment/; allow_internet -> open."""
    task = load_task(FIXTURES / "capital-qa")
    assert task.environment.image == "docker.io/library/debian:bookworm-slim"
    assert task.environment.build_context is None
    assert task.environment.network == "open"
    assert task.solution.answer == "Paris"


@pytest.mark.parametrize("task_id", ["capital-qa", "fix-add", "hello-file"])
def test_round_trip_through_toml(task_id):
    """A loaded task survives Task.to_toml / Task.from_toml unchanged."""
    task = load_taskdir(FIXTURES).get(task_id)
    assert Task.from_toml(task.to_toml()) == task


def test_single_task_dir_is_a_dataset_of_one():
    """Pointing at one task directory gives a dataset holding that task."""
    dataset = load_taskdir(FIXTURES / "hello-file")
    assert [t.id for t in dataset] == ["hello-file"]


def test_documented_harbor_fields_are_tolerated(tmp_path):
    """Harbor fields kwaigym does not use (IGNORED) load without error."""
    toml = """
version = "1.0"
source = "terminal-bench"
[task]
name = "org/t1"
[verifier]
env = { A = "1" }
user = "root"
[agent]
user = "agent"
[solution]
env = {}
[environment]
build_timeout_sec = 900.0
gpus = 0
gpu_types = []
mcp_servers = []
env = {}
skills_dir = "/skills"
os = "linux"
"""
    load_task(make_task(tmp_path, toml))
    assert "build_timeout_sec" in IGNORED["environment"]


@pytest.mark.parametrize(
    ("line", "network"), [("network_mode = 'no-network'", "none"), ("network_mode = 'public'", "open")]
)
def test_network_mode(tmp_path, line, network):
    """Harbor's newer network_mode maps onto kwaigym's network modes."""
    task = load_task(make_task(tmp_path, f"[environment]\n{line}\n"))
    assert task.environment.network == network


def test_empty_directory_is_an_error(tmp_path):
    """A directory with no task directories says what a task directory holds."""
    with pytest.raises(ConfigError, match="no task directories"):
        load_taskdir(tmp_path)


# --- malformed tasks: the error names the file and the field --------------------------------------


def _error(task_dir: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_task(task_dir)
    assert info.value.task_id == task_dir.name
    return info.value


def test_bad_toml_names_the_file(tmp_path):
    """A task.toml that is not TOML names the file."""
    error = _error(make_task(tmp_path, "[verifier\ntimeout_sec = 1"))
    assert "task.toml" in str(error) and "not valid TOML" in str(error)


def test_unknown_section_names_the_field(tmp_path):
    """An unknown top-level section is refused, naming it."""
    error = _error(make_task(tmp_path, "[environmnet]\ncpus = 2\n"))
    assert "task.toml: environmnet: unknown field" in str(error)


def test_typo_in_a_field_names_it(tmp_path):
    """cpu (for cpus) is refused instead of silently running with one CPU."""
    error = _error(make_task(tmp_path, "[environment]\ncpu = 2\n"))
    assert "[environment] cpu: unknown field" in str(error) and "cpus" in str(error)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[environment]\ncpus = 'two'\n", "[environment] cpus"),
        ("[environment]\nmemory_mb = '2G'\n", "[environment] memory_mb"),
        ("[environment]\nmemory = 'lots'\n", "[environment] memory"),
        ("[environment]\nallow_internet = 'yes'\n", "[environment] allow_internet"),
        ("[environment]\nsetup = 'make'\n", "[environment] setup"),
        ("[agent]\ntimeout_sec = -1\n", "[agent] timeout_sec"),
        ("[verifier]\ntimeout_sec = true\n", "[verifier] timeout_sec"),
        ("verifier = 3\n", "verifier"),
    ],
)
def test_wrong_type_names_the_field(tmp_path, toml, field):
    """A field of the wrong type is refused, naming the file and the field."""
    error = _error(make_task(tmp_path, toml))
    assert f"task.toml: {field}: expected" in str(error)


def test_missing_instruction(tmp_path):
    """No instruction.md: the error names the file."""
    error = _error(make_task(tmp_path, files={"instruction.md": None}))
    assert "instruction.md: missing" in str(error)


def test_missing_dockerfile(tmp_path):
    """No environment/Dockerfile or Containerfile (and no docker_image): the error names the file."""
    error = _error(make_task(tmp_path, files={"environment/Dockerfile": None}))
    assert "environment/Dockerfile: missing" in str(error)


def test_missing_test_script(tmp_path):
    """The script verifier without tests/test.sh: the error names the file."""
    error = _error(make_task(tmp_path, files={"tests/test.sh": None, "tests/other.py": ""}))
    assert "tests/test.sh: missing" in str(error)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ('kind = "swe"\n[verifier.params]\nparser = "pytest"\ntest_command = "pytest"\n', "fail_to_pass"),
        (
            'kind = "swe"\n[verifier.params]\nfail_to_pass = ["t"]\nparser = "nose"\ntest_command = "x"\n',
            "parser",
        ),
        ('kind = "output"\n[verifier.params]\nmode = "exact"\n', "answer"),
        ('kind = "output"\n[verifier.params]\nprogram = "python3 a.py"\n', "cases"),
        ('kind = "output"\n[verifier.params]\nanswer = "x"\nmode = "fuzzy"\n', "mode"),
        ('kind = "judge"\n[verifier.params]\nrubric = [{name = "x", weight = -1}]\n', "weight"),
    ],
)
def test_verifier_params_are_checked_per_kind(tmp_path, params, field):
    """Params a built-in verifier kind could not use fail at load time, naming the field."""
    error = _error(make_task(tmp_path, f"[verifier]\n{params}"))
    assert "task.toml: verifier:" in str(error) and field in str(error)


def test_unregistered_kind_params_pass_through(tmp_path):
    """A kind registered by another package keeps its params unchecked."""
    task = load_task(make_task(tmp_path, '[verifier]\nkind = "mine"\n[verifier.params]\nanything = 1\n'))
    assert task.verifier.params == {"anything": 1}


def test_multi_step_tasks_are_refused(tmp_path):
    """[[steps]] is named as unsupported."""
    error = _error(make_task(tmp_path, '[[steps]]\nname = "one"\n'))
    assert "steps: multi-step" in str(error)


def test_gpus_are_refused(tmp_path):
    """A task asking for GPUs fails at load time."""
    error = _error(make_task(tmp_path, "[environment]\ngpus = 1\n"))
    assert "[environment] gpus" in str(error)


def test_copied_fixture_with_missing_test_files_dir(tmp_path):
    """The swe verifier's test_files_dir must exist when the task loads."""
    task_dir = tmp_path / "fix-add"
    shutil.copytree(FIXTURES / "fix-add", task_dir)
    shutil.rmtree(task_dir / "hidden_tests")
    error = _error(task_dir)
    assert "verifier.params.test_files_dir" in str(error)
