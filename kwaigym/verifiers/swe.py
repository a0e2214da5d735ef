"""The ``swe`` verifier: named tests must pass (SWE-bench's FAIL_TO_PASS and PASS_TO_PASS).

The task's own test files are put back over whatever the agent did to them, the test command runs
in the workdir, a log parser reads each test's status, and the reward is 1.0 iff every
FAIL_TO_PASS and PASS_TO_PASS test passed. A test missing from the log counts as failed (the
agent may have broken collection, or deleted the test).

Test files come as a ``test_patch`` (a unified diff) and/or a ``test_files_dir`` (a task
directory copied over the workdir). Before the patch is applied, every file it touches is
reset: checked out from ``base_commit`` (default ``HEAD``) when the workdir is a git checkout,
with the agent's git hooks disabled; files the patch creates are deleted. Outside git, files
the patch creates are deleted and the patch applied as is; a patch that no longer applies
(the agent edited those files) makes the result invalid, so outside git prefer
``test_files_dir``. Limits: files the agent added elsewhere (a ``conftest.py``) stay.
"""

from __future__ import annotations

import re
import shlex

import attrs

from kwaigym.errors import ConfigError
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers.base import (
    VERIFIER_ENV,
    Attempt,
    VerifierError,
    VerifierResult,
    need_sandbox,
    parse_params,
    tail,
)
from kwaigym.verifiers.parsers import PARSERS, PASSED, canonical_id

MISSING = "MISSING"
"""Status of a named test the log does not mention (counts as failed)."""
PATCH_PATH = "/tmp/kwaigym-verifier/test.patch"
_LOG_CAP = 32 << 20  # bytes per stream: a parser needs the whole log, not its head and tail


def _test_ids(instance, attribute, value):
    if not all(isinstance(t, str) and t.strip() for t in value):
        raise ConfigError(f"{attribute.name} must be a list of test ids (non-empty strings), got {value!r}")


def _str_list(value):
    if isinstance(value, str):
        raise ConfigError(f"expected a list of test ids, got the string {value!r}")
    return tuple(value)


_optional_str = attrs.validators.optional(attrs.validators.instance_of(str))


@attrs.frozen(kw_only=True)
class SweParams:
    """Params of the ``swe`` verifier."""

    test_command: str = attrs.field(validator=attrs.validators.instance_of(str))
    """Shell command run in the workdir, e.g. ``python3 -m pytest -rA -p no:cacheprovider tests``."""
    parser: str = attrs.field(validator=attrs.validators.in_(sorted(PARSERS)))
    """The log parser: ``pytest``, ``unittest``, ``go``, ``cargo``, ``jest`` or ``mocha``."""
    fail_to_pass: tuple[str, ...] = attrs.field(default=(), converter=_str_list, validator=_test_ids)
    """Tests the fix must make pass."""
    pass_to_pass: tuple[str, ...] = attrs.field(default=(), converter=_str_list, validator=_test_ids)
    """Tests that passed before and must still pass."""
    test_patch: str | None = attrs.field(default=None, validator=_optional_str)
    """A unified diff adding or changing the tests."""
    test_files_dir: str | None = attrs.field(default=None, validator=_optional_str)
    """A task directory (relative to the root) whose contents are copied over the workdir."""
    base_commit: str = attrs.field(default="HEAD", validator=attrs.validators.instance_of(str))
    """The commit the touched files are reset to, in a git workdir."""

    def __attrs_post_init__(self):
        if not self.fail_to_pass and not self.pass_to_pass:
            raise ConfigError("name at least one test in fail_to_pass or pass_to_pass")


class SweVerifier:
    """Scores FAIL_TO_PASS and PASS_TO_PASS tests (see the module docstring)."""

    kind = "swe"

    def __init__(self, spec: VerifierSpec):
        self.params: SweParams = parse_params(SweParams, spec)

    async def verify(self, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult:
        sandbox, p, workdir = need_sandbox(sandbox, self.kind), self.params, task.environment.workdir
        files_dir = task.path(p.test_files_dir) if p.test_files_dir else None
        if files_dir is not None and not files_dir.is_dir():
            raise ConfigError(f"the swe verifier's test_files_dir {files_dir} does not exist")
        if p.test_patch:
            await apply_test_patch(sandbox, p.test_patch, workdir=workdir, base_commit=p.base_commit)
        if files_dir is not None:
            await sandbox.put_dir(str(files_dir), workdir)
        # Stale bytecode would run old code: Python trusts a .pyc whose source has the same size and
        # mtime second, which an edit right after a test run can keep. The tests compile afresh.
        purge = "find . -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null; "
        run = await sandbox.exec(purge + p.test_command, cwd=workdir, env=VERIFIER_ENV, max_output=_LOG_CAP)
        log = f"{run.stdout}\n{run.stderr}"
        statuses = PARSERS[p.parser](log)
        tests = {t: statuses.get(canonical_id(p.parser, t), MISSING) for t in p.fail_to_pass + p.pass_to_pass}
        scores = {
            name: sum(tests[t] == PASSED for t in ids) / len(ids)
            for name, ids in (("fail_to_pass", p.fail_to_pass), ("pass_to_pass", p.pass_to_pass))
            if ids
        }
        details = {
            "tests": tests,
            "exit_code": run.exit_code,
            "parsed": len(statuses),
            "log_truncated": run.truncated,
            "log_tail": tail(run.output),
        }
        reward = 1.0 if all(s == PASSED for s in tests.values()) else 0.0
        return VerifierResult(reward=reward, reward_valid=True, scores=scores, details=details)


def patched_files(patch: str) -> tuple[list[str], list[str]]:
    """(every file the diff touches, the files it creates), as paths relative to the workdir.

    Hunks are skipped by their line counts, so a removed line that reads ``-- x`` is not a header.
    """
    touched: list[str] = []
    created: list[str] = []
    lines = patch.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if hunk := _HUNK.match(line):
            i += 1 + _hunk_length(lines, i + 1, int(hunk[1] or 1), int(hunk[2] or 1))
            continue
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _diff_path(line[4:]), _diff_path(lines[i + 1][4:])
            touched += [p for p in dict.fromkeys((old, new)) if p and p not in touched]
            if not old and new:
                created.append(new)
            i += 1
        i += 1
    return touched, created


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def _hunk_length(lines: list[str], start: int, old: int, new: int) -> int:
    """How many lines the hunk body starting at ``start`` spans."""
    i = start
    while i < len(lines) and (old > 0 or new > 0):
        tag = lines[i][:1]
        if tag in (" ", ""):
            old, new = old - 1, new - 1
        elif tag == "-":
            old -= 1
        elif tag == "+":
            new -= 1
        i += 1  # "\\ No newline at end of file" counts for neither side
    return i - start


def _diff_path(text: str) -> str:
    """The path of a ``---``/``+++`` header without its ``a/``/``b/`` prefix; "" for /dev/null."""
    path = text.split("\t", 1)[0].strip()
    if path.startswith('"') and path.endswith('"'):
        path = path[1:-1].encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
    if path == "/dev/null":
        return ""
    return path.split("/", 1)[1] if path[:2] in ("a/", "b/") else path


# Reset the touched files (git: from the base commit, hooks off; created ones deleted), then apply.
_APPLY = """
set -u
git() { command git -c safe.directory='*' -c core.hooksPath=/dev/null "$@"; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  for f in @TOUCHED@; do
    if git cat-file -e @REV@:./"$f" 2>/dev/null; then
      git checkout -q @REV@ -- "$f" || exit 10
    else
      rm -rf -- "$f"
    fi
  done
  git apply --whitespace=nowarn @PATCH@ && exit 0
else
  for f in @CREATED@; do rm -rf -- "$f"; done
fi
patch -p1 --batch --forward < @PATCH@
"""


async def apply_test_patch(sandbox: Sandbox, patch: str, *, workdir: str, base_commit: str = "HEAD") -> None:
    """Reset the files ``patch`` touches, then apply it in ``workdir``; raise VerifierError if it fails."""
    touched, created = patched_files(patch)
    await sandbox.put_file(PATCH_PATH, patch.encode() if patch.endswith("\n") else f"{patch}\n".encode())
    values = {
        "@TOUCHED@": " ".join(shlex.quote(f) for f in touched),
        "@CREATED@": " ".join(shlex.quote(f) for f in created),
        "@REV@": shlex.quote(base_commit),
        "@PATCH@": PATCH_PATH,
    }
    script = _APPLY
    for placeholder, value in values.items():
        script = script.replace(placeholder, value)
    result = await sandbox.exec(script, cwd=workdir)
    if not result.ok:
        raise VerifierError(
            f"the test patch could not be applied (exit {result.exit_code}): {result.output[-800:]}"
        )
