"""Which files a test patch touches (they are reset before it is applied)."""

from __future__ import annotations

from kwaigym.verifiers.swe import patched_files


def test_patched_files_of_a_git_diff():
    """Modified, created, deleted and renamed files; a/ and b/ prefixes dropped."""
    patch = "\n".join(
        [
            "diff --git a/tests/test_a.py b/tests/test_a.py",
            "--- a/tests/test_a.py",
            "+++ b/tests/test_a.py",
            "@@ -1,2 +1,2 @@",
            " import a",
            "-x = 1",
            "+x = 2",
            "diff --git a/tests/new.py b/tests/new.py",
            "new file mode 100644",
            "--- /dev/null",
            "+++ b/tests/new.py",
            "@@ -0,0 +1 @@",
            "+y = 1",
            "diff --git a/tests/old.py b/tests/old.py",
            "deleted file mode 100644",
            "--- a/tests/old.py",
            "+++ /dev/null",
            "@@ -1 +0,0 @@",
            "-z = 1",
        ]
    )
    assert patched_files(patch) == (["tests/test_a.py", "tests/new.py", "tests/old.py"], ["tests/new.py"])


def test_removed_lines_that_look_like_headers_are_not_files():
    """Inside a hunk, '--- x' is a removed line '-- x' and '+++ y' an added '++ y', not headers."""
    patch = "\n".join(
        [
            "--- a/notes.sql",
            "+++ b/notes.sql",
            "@@ -1,2 +1,2 @@",
            "--- a comment",
            "+++ counter",
            " select 1;",
        ]
    )
    assert patched_files(patch) == (["notes.sql"], [])


def test_plain_diff_u_headers_with_timestamps_and_quoted_names():
    """`diff -u` puts a timestamp after a tab; git quotes names with odd characters."""
    patch = "\n".join(
        [
            "--- a/src/x.c\t2024-01-01 10:00:00.000000000 +0000",
            "+++ b/src/x.c\t2024-01-02 10:00:00.000000000 +0000",
            "@@ -1 +1 @@",
            "-a",
            "+b",
            '--- "a/tests/caf\\303\\251 test.py"',
            '+++ "b/tests/caf\\303\\251 test.py"',
            "@@ -1 +1 @@",
            "-a",
            "+b",
        ]
    )
    assert patched_files(patch)[0] == ["src/x.c", "tests/café test.py"]
