"""Log parsers on real logs: pytest and unittest logs are produced here by running the runners;
jest, mocha and cargo logs were captured from real runs (``logs/``); go's is typed after one."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kwaigym.verifiers.parsers import PARSERS, canonical_id

LOGS = Path(__file__).parent / "logs"

PYTEST_TESTS = """
import pytest

def test_ok():
    pass

def test_fail():
    assert 1 == 2

@pytest.mark.parametrize("x", ["a b", "c-d", "e - f"])
def test_param(x):
    assert x != "c-d"

@pytest.mark.skip(reason="nope")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

class TestK:
    def test_method(self):
        print("PASSED but not a status line")

@pytest.fixture
def broken():
    raise RuntimeError("boom")

def test_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown")

def test_teardown_error(bad_teardown):
    pass
"""

UNITTEST_TESTS = '''
import unittest

class TestK(unittest.TestCase):
    def test_ok(self):
        pass

    def test_fail(self):
        self.assertEqual(1, 2)

    def test_error(self):
        raise RuntimeError("boom")

    @unittest.skip("nope")
    def test_skip(self):
        pass

    def test_doc(self):
        """A docstring line (with parentheses) ... and dots."""

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_xpass(self):
        pass

    def test_prints(self):
        print("hello from the test")

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)
'''


def _run(argv: list[str], cwd: Path, *, merge: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KWAIGYM_"))}
    err = subprocess.STDOUT if merge else subprocess.PIPE
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=120)
    return done.stdout if merge else f"{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def pytest_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pyproj")
    (root / "tests").mkdir()
    (root / "tests" / "test_mod.py").write_text(PYTEST_TESTS)
    return root


PYTEST_EXPECTED = {
    "tests/test_mod.py::test_ok": "PASSED",
    "tests/test_mod.py::test_fail": "FAILED",
    "tests/test_mod.py::test_param[a b]": "PASSED",
    "tests/test_mod.py::test_param[c-d]": "FAILED",
    "tests/test_mod.py::test_param[e - f]": "PASSED",
    "tests/test_mod.py::test_xfail": "PASSED",
    "tests/test_mod.py::TestK::test_method": "PASSED",
    "tests/test_mod.py::test_error": "ERROR",
    "tests/test_mod.py::test_teardown_error": "ERROR",
}


@pytest.mark.parametrize("flags", [["-rA"], ["-v"], ["-rA", "-v"]], ids=["summary", "verbose", "both"])
def test_pytest_real_log(pytest_project, flags):
    """Real pytest output, summary and verbose forms: ids with spaces and ' - ', teardown errors win."""
    log = _run([sys.executable, "-m", "pytest", *flags, "-p", "no:cacheprovider", "tests"], pytest_project)
    expected = dict(PYTEST_EXPECTED)
    if "-v" in flags:  # the -rA summary names skipped tests by location only
        expected["tests/test_mod.py::test_skipped"] = "SKIPPED"
    assert PARSERS["pytest"](log) == expected


def test_pytest_collection_error_and_colour(pytest_project, tmp_path):
    """A module that fails to import is an ERROR for the file; ANSI colour codes do not matter."""
    (tmp_path / "test_broken.py").write_text("import nonexistent_module_xyz\n\ndef test_a():\n    pass\n")
    log = _run(
        [sys.executable, "-m", "pytest", "-rA", "--color=yes", "-p", "no:cacheprovider", "."], tmp_path
    )
    assert "\x1b[" in log
    assert PARSERS["pytest"](log) == {"test_broken.py": "ERROR"}


def _pythons() -> dict[str, str]:
    """This interpreter and other CPythons found here, by version (3.10's unittest prints another
    format than 3.11+'s)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for version in ("3.10", "3.12", "3.13"):
        paths = glob.glob(f"/usr/bin/python{version}")
        paths += glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))
        if paths:
            found.setdefault(version, paths[0])
    return found


PYTHONS = _pythons()


UNITTEST_EXPECTED = {
    "test_mod.TestK.test_ok": "PASSED",
    "test_mod.TestK.test_fail": "FAILED",
    "test_mod.TestK.test_error": "ERROR",
    "test_mod.TestK.test_skip": "SKIPPED",
    "test_mod.TestK.test_doc": "PASSED",
    "test_mod.TestK.test_xfail": "PASSED",
    "test_mod.TestK.test_xpass": "FAILED",
    "test_mod.TestK.test_prints": "PASSED",
    "test_mod.TestK.test_subtests": "FAILED",
}


@pytest.mark.parametrize("version", sorted(PYTHONS))
@pytest.mark.parametrize("merge", [False, True], ids=["streams", "merged"])
def test_unittest_real_log(tmp_path, version, merge):
    """Real `unittest -v` output of each Python here: docstrings, subtests, test output mixed in."""
    (tmp_path / "test_mod.py").write_text(UNITTEST_TESTS)
    log = _run([PYTHONS[version], "-u", "-m", "unittest", "-v", "test_mod"], tmp_path, merge=merge)
    assert PARSERS["unittest"](log) == UNITTEST_EXPECTED, log


def test_unittest_django_style_log():
    """Django's runner on Python 3.10: `name (module.Class)` ids, a docstring line, FAIL/ERROR headers."""
    assert PARSERS["unittest"]((LOGS / "unittest_django_py310.log").read_text()) == {
        "model_tests.tests.ArticleTests.test_get_absolute_url": "PASSED",
        "model_tests.tests.ArticleTests.test_slug_is_unique": "FAILED",
        "model_tests.tests.ArticleTests.test_str": "PASSED",
        "model_tests.tests.PublishTests.test_publish_sends_mail": "ERROR",
        "model_tests.tests.PublishTests.test_timezone": "SKIPPED",
    }


@pytest.mark.parametrize(
    "given",
    ["test_str (model_tests.tests.ArticleTests)", "test_str (model_tests.tests.ArticleTests.test_str)",
     "model_tests.tests.ArticleTests.test_str"],
)  # fmt: skip
def test_unittest_ids_in_any_printed_form_are_canonical(given):
    """SWE-bench lists unittest ids as printed; both printed forms map to the dotted path."""
    assert canonical_id("unittest", given) == "model_tests.tests.ArticleTests.test_str"


def test_go_log():
    """`go test -v`: top-level tests and subtests by path, skips, two packages."""
    assert PARSERS["go"]((LOGS / "go_test.log").read_text()) == {
        "TestAdd": "PASSED",
        "TestSub": "FAILED",
        "TestTable": "FAILED",
        "TestTable/positive": "PASSED",
        "TestTable/negative_numbers": "FAILED",
        "TestSkipped": "SKIPPED",
        "TestParallel": "PASSED",
        "TestOther": "PASSED",
    }


def test_cargo_log():
    """`cargo test`: unit tests by module path, ignored ones (with a reason), integration and doc tests."""
    assert PARSERS["cargo"]((LOGS / "cargo_test.log").read_text()) == {
        "tests::it_works": "PASSED",
        "tests::nested::halves": "PASSED",
        "tests::net_one": "SKIPPED",
        "tests::slow_one": "SKIPPED",
        "tests::it_fails": "FAILED",
        "integration_ok": "PASSED",
        "src/lib.rs - add (line 3)": "PASSED",
    }


JEST_VERBOSE = {
    "top-level test": "PASSED",
    "sum > adds 1 + 2 to equal 3": "PASSED",
    "sum > adds negatives": "FAILED",
    "sum > skipped one": "SKIPPED",
    "sum > write more tests": "SKIPPED",
    "sum > with floats > adds 0.1 + 0.2 closely": "PASSED",
    "sum > with floats > throws on nothing": "FAILED",
    "Other > suite > works with › odd chars": "PASSED",
}


def test_jest_verbose_log():
    """Jest --verbose: nested describe blocks by indentation, skip and todo marks, durations cut."""
    assert PARSERS["jest"]((LOGS / "jest_verbose.log").read_text()) == JEST_VERBOSE


def test_jest_default_log_names_failures():
    """Without --verbose jest lists only failures, as `● suite › test` headers; `● Console` is no test."""
    assert PARSERS["jest"]((LOGS / "jest_default.log").read_text()) == {
        "sum > adds negatives": "FAILED",
        "sum > with floats > throws on nothing": "FAILED",
    }
    assert canonical_id("jest", "sum › adds negatives") == "sum > adds negatives"


def test_mocha_spec_log():
    """Mocha's spec reporter: ✔ passes, numbered failures (a failed hook too), pending tests."""
    assert PARSERS["mocha"]((LOGS / "mocha_spec.log").read_text()) == {
        "root level test": "PASSED",
        "Array > #indexOf() > should return -1 when the value is not present": "PASSED",
        "Array > #indexOf() > should find 2 at index 1": "FAILED",
        "Array > #indexOf() > is pending": "SKIPPED",
        "Array > #indexOf() > is slow": "PASSED",
        'Hooks > "before each" hook for "never runs"': "FAILED",
    }


def test_mocha_two_runs_in_one_log():
    """Two mocha runs one after the other (a monorepo's packages) are both read."""
    one = (LOGS / "mocha_spec.log").read_text()
    two = "\n> pkg-b@1.0.0 test\n> mocha\n\n\n  Parser\n    ✔ parses (3ms)\n\n\n  1 passing (5ms)\n\n"
    statuses = PARSERS["mocha"](one + two)
    assert statuses["Parser > parses"] == "PASSED" and statuses["root level test"] == "PASSED"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parsers_ignore_garbage(name):
    """Random text and empty logs give no tests, never an error."""
    assert PARSERS[name]("") == {}
    assert PARSERS[name]("\x00\x1b[31mnot a log\n\n...\n  ✓\n--- PASS\ntest  ... ok\nPASSED\n") == {}
