"""The bundle cache: installed once, a failed install leaves nothing behind."""

from __future__ import annotations

import pytest

from kwaigym.errors import HostSetupError
from scaffolds.npm import cached_install


def test_installs_once_and_reuses(tmp_path):
    """The install command runs once; a second call returns the same directory without running it."""
    runs = []

    def cmd_for(into):
        runs.append(into)
        return ["sh", "-c", f"mkdir -p {into} && echo hi > {into}/file"]

    first = cached_install(tmp_path, "tool-1.0", "tool 1.0", cmd_for, timeout=30)
    second = cached_install(tmp_path, "tool-1.0", "tool 1.0", cmd_for, timeout=30)
    assert first == second == tmp_path / "tool-1.0" and (first / "file").read_text() == "hi\n"
    assert len(runs) == 1 and runs[0].name == "tool-1.0.partial"


def test_failed_install_leaves_no_bundle(tmp_path):
    """A failing install raises with its output and leaves neither the bundle nor a partial one."""
    cmd_for = lambda into: ["sh", "-c", f"mkdir -p {into}; echo broken mirror >&2; exit 3"]  # noqa: E731
    with pytest.raises(HostSetupError, match="broken mirror"):
        cached_install(tmp_path, "tool-2.0", "tool 2.0", cmd_for, timeout=30)
    assert not (tmp_path / "tool-2.0").exists() and not (tmp_path / "tool-2.0.partial").exists()
