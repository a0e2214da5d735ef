"""Test-runner log parsers: a log in, ``{test_id: "PASSED" | "FAILED" | "SKIPPED" | "ERROR"}`` out.

One parser per runner, for the output a FAIL_TO_PASS / PASS_TO_PASS check needs. Test ids:

- ``pytest``: the node id, ``tests/test_x.py::TestK::test_a[param]``. Reads the ``-rA`` summary
  (``PASSED tests/x.py::test_a``, ``FAILED ... - message``) and the ``-v`` lines
  (``tests/x.py::test_a PASSED [ 50%]``), xdist's ``[gw0] [ 50%] PASSED ...`` too. XFAIL counts as
  passed and XPASS as passed (a strict xpass is reported as FAILED by pytest itself).
- ``unittest``: the dotted path ``module.Class.test_a``, from ``-v`` lines in both the Python 3.11+
  form ``test_a (module.Class.test_a) ... ok`` and the older ``test_a (module.Class) ... ok``
  (Django's runner too), docstring lines included, and from ``FAIL:``/``ERROR:`` headers. Ids given
  to the ``swe`` verifier in either printed form are normalised the same way (:func:`canonical_id`).
- ``go``: the test name as ``go test -v`` prints it, subtests with their path: ``TestX/case``.
- ``cargo``: the path ``cargo test`` prints: ``tests::it_works``, doc tests as
  ``src/lib.rs - add (line 3)``.
- ``jest`` and ``mocha``: the titles of the enclosing ``describe`` blocks and of the test joined by
  ``" > "``: ``sum > with floats > adds``. Jest's ``●`` failure headers (``sum › adds``) are read
  too, so non-verbose runs still name their failures.

A test reported more than once (setup passed, teardown errored; two binaries) keeps its worst
status. ANSI colour codes are removed first. Unknown lines are ignored: a test missing from the
log is the caller's business (the ``swe`` verifier counts it as failed).
"""

from __future__ import annotations

import re
from collections.abc import Callable

PASSED, FAILED, SKIPPED, ERROR = "PASSED", "FAILED", "SKIPPED", "ERROR"
_RANK = {PASSED: 0, SKIPPED: 1, FAILED: 2, ERROR: 3}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Statuses = dict[str, str]
Parser = Callable[[str], Statuses]


def _lines(log: str) -> list[str]:
    return _ANSI.sub("", log).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _put(found: Statuses, test_id: str, status: str) -> None:
    """Record a status; a worse one wins over a better one already seen."""
    test_id = test_id.strip()
    if test_id and _RANK[status] >= _RANK.get(found.get(test_id), -1):
        found[test_id] = status


# -- pytest -------------------------------------------------------------------------------------

_PYTEST_STATUS = {
    "PASSED": PASSED,
    "FAILED": FAILED,
    "ERROR": ERROR,
    "SKIPPED": SKIPPED,
    "XFAIL": PASSED,
    "XPASS": PASSED,
}
_PYTEST_SUMMARY = re.compile(r"^(?:\[gw\d+\] \[\s*\d+%\] )?(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (.+)$")
_PYTEST_VERBOSE = re.compile(r"^(\S+?::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?:\s|$)")


def _pytest_id(rest: str) -> str | None:
    """The node id at the start of ``rest`` (up to a `` - message`` outside brackets)."""
    if rest.startswith("["):  # SKIPPED [1] tests/x.py:12: reason -- a location, not an id
        return None
    depth = 0
    for i, char in enumerate(rest):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and rest.startswith(" - ", i):
            return rest[:i]
    return rest.strip()


def parse_pytest(log: str) -> Statuses:
    found: Statuses = {}
    for line in _lines(log):
        if match := _PYTEST_SUMMARY.match(line):
            test_id = _pytest_id(match[2])
            if test_id and ("::" in test_id or test_id.endswith(".py")):
                _put(found, test_id, _PYTEST_STATUS[match[1]])
        elif match := _PYTEST_VERBOSE.match(line):
            _put(found, match[1], _PYTEST_STATUS[match[2]])
    return found


# -- unittest -----------------------------------------------------------------------------------

_UNITTEST_STATUS = {
    "ok": PASSED,
    "FAIL": FAILED,
    "ERROR": ERROR,
    "skipped": SKIPPED,
    "expected failure": PASSED,
    "unexpected success": FAILED,
}
_UT_NAME = r"(\w+) \(([\w.]+)\)"
_UT_STATUS = r"(ok|FAIL|ERROR|skipped|expected failure|unexpected success)\b"
_UT_RESULT = re.compile(rf"{_UT_NAME}(?: \([^()]*\))? \.\.\. {_UT_STATUS}")  # anywhere: see below
_UT_OPEN = re.compile(rf"^{_UT_NAME}(?: \([^()]*\))?(?: \.\.\. .*)?$")  # its result comes later
_UT_LATE_RESULT = re.compile(rf"^(?:.* \.\.\. )?{_UT_STATUS}")
_UT_HEADER = re.compile(rf"^(FAIL|ERROR): {_UT_NAME}")


def _ut_id(name: str, where: str) -> str:
    return where if where.endswith(f".{name}") else f"{where}.{name}"


def parse_unittest(log: str) -> Statuses:
    """Results are looked for anywhere in a line: before 3.11 a failed subtest leaves its line
    open and the next test's result follows on it. A test whose line stays open (a docstring on
    the next line, output of the test, 3.11's indented subtest lines) takes the next result."""
    found: Statuses = {}
    pending: str | None = None
    for line in _lines(log):
        if match := _UT_HEADER.match(line):
            _put(found, _ut_id(match[2], match[3]), _UNITTEST_STATUS[match[1]])
            pending = None
        elif pending and not _UT_OPEN.match(line) and (match := _UT_LATE_RESULT.match(line.strip())):
            _put(found, pending, _UNITTEST_STATUS[match[1]])
            pending = None
        elif hits := list(_UT_RESULT.finditer(line)):
            for hit in hits:
                _put(found, _ut_id(hit[1], hit[2]), _UNITTEST_STATUS[hit[3]])
            pending = None
        elif match := _UT_OPEN.match(line):
            pending = _ut_id(match[1], match[2])
    return found


def canonical_unittest_id(test_id: str) -> str:
    """``test_a (mod.Class)`` or ``test_a (mod.Class.test_a)`` -> ``mod.Class.test_a``."""
    match = re.match(rf"^{_UT_NAME}", test_id.strip())
    return _ut_id(match[1], match[2]) if match else test_id.strip()


# -- go -----------------------------------------------------------------------------------------

_GO = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(")
_GO_STATUS = {"PASS": PASSED, "FAIL": FAILED, "SKIP": SKIPPED}


def parse_go(log: str) -> Statuses:
    found: Statuses = {}
    for line in _lines(log):
        if match := _GO.match(line):
            _put(found, match[2], _GO_STATUS[match[1]])
    return found


# -- cargo --------------------------------------------------------------------------------------

_CARGO = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)\b")
_CARGO_STATUS = {"ok": PASSED, "FAILED": FAILED, "ignored": SKIPPED}


def parse_cargo(log: str) -> Statuses:
    found: Statuses = {}
    for line in _lines(log):
        if match := _CARGO.match(line):
            _put(found, match[1], _CARGO_STATUS[match[2]])
    return found


# -- jest and mocha: trees of describe blocks by indentation -------------------------------------

SEP = " > "
_DURATION = re.compile(r"\s\(\d+(?:\.\d+)?\s*m?s\)$")
_JEST_FILE = re.compile(r"^\s*(PASS|FAIL)\s+\S")
_JEST_TEST = re.compile(r"^(\s+)(✓|✔|√|✕|✗|×|○|✎) (?:(?:skipped|todo) )?(.+)$")
_JEST_MARKS = {"✓": PASSED, "✔": PASSED, "√": PASSED, "✕": FAILED, "✗": FAILED, "×": FAILED}
_JEST_FAILURE = re.compile(r"^\s+● (.+)$")
_MOCHA_TEST = re.compile(r"^(\s+)(✓|✔|√|\d+\)|-) (.+)$")
_MOCHA_END = re.compile(r"^\s+\d+ (passing|failing|pending)\b")


class _Tree:
    """The describe blocks enclosing the current line, by indentation."""

    def __init__(self):
        self.stack: list[tuple[int, str]] = []

    def id_at(self, indent: int, title: str) -> str:
        self.stack = [(i, t) for i, t in self.stack if i < indent]
        return SEP.join([t for _, t in self.stack] + [title.strip()])

    def enter(self, indent: int, title: str) -> None:
        self.stack = [(i, t) for i, t in self.stack if i < indent] + [(indent, title.strip())]


def parse_jest(log: str) -> Statuses:
    found: Statuses = {}
    tree, in_tree = _Tree(), False
    for line in _lines(log):
        if _JEST_FILE.match(line):
            tree, in_tree = _Tree(), True
        elif match := _JEST_FAILURE.match(line):
            in_tree = False
            title = match[1].strip()
            if " › " in title:  # "● Console" and "● Test suite failed to run" name no test
                _put(found, title.replace(" › ", SEP), FAILED)
        elif not in_tree or not line.strip():
            continue
        elif match := _JEST_TEST.match(line):
            status = _JEST_MARKS.get(match[2], SKIPPED)
            _put(found, tree.id_at(len(match[1]), _DURATION.sub("", match[3])), status)
        elif line.startswith(" "):
            tree.enter(len(line) - len(line.lstrip()), line)
        else:
            in_tree = False
    return found


def parse_mocha(log: str) -> Statuses:
    found: Statuses = {}
    tree, in_tree = _Tree(), True
    for line in _lines(log):
        if not line.strip():
            continue
        if _MOCHA_END.match(line):
            in_tree = False  # the failure list after the summary repeats titles in another layout
        elif not line.startswith(" "):  # test output, or after a summary another command's
            if not in_tree:
                tree, in_tree = _Tree(), True  # a new run may follow
        elif in_tree and (match := _MOCHA_TEST.match(line)):
            mark = match[2]
            status = PASSED if mark in "✓✔√" else SKIPPED if mark == "-" else FAILED
            _put(found, tree.id_at(len(match[1]), _DURATION.sub("", match[3])), status)
        elif in_tree:
            tree.enter(len(line) - len(line.lstrip()), line)
    return found


PARSERS: dict[str, Parser] = {
    "pytest": parse_pytest,
    "unittest": parse_unittest,
    "go": parse_go,
    "cargo": parse_cargo,
    "jest": parse_jest,
    "mocha": parse_mocha,
}


def canonical_id(parser: str, test_id: str) -> str:
    """A test id as ``parser`` reports it (unittest's printed forms, jest's ``›``, normalised)."""
    if parser == "unittest":
        return canonical_unittest_id(test_id)
    if parser == "jest":
        return test_id.strip().replace(" › ", SEP)
    return test_id.strip()
