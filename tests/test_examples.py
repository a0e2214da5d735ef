"""Every example a user is shown runs: the README's Python block and `make demo`'s script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.podman


def test_readme_python_example_runs():
    """The README's sandbox example prints what it promises."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hi\n\n/tmp\n1\n\n"


def test_sandbox_demo_scores_fix_and_empty_attempt():
    """The demo's agent earns reward 1, the empty attempt 0, and the other host port stays closed."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sandbox_demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith('{"reward": 1.0, "empty_reward": 0.0')
