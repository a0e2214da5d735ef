"""Every example a user is shown runs: the README's Python block and `make demo`'s script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.podman


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def readme_block(marker: str) -> str:
    """The README's Python block that contains ``marker``."""
    (block,) = [b for b in readme_blocks() if marker in b]
    return block


def run_block(block: str) -> str:
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_readme_sandbox_example_runs():
    """The README's sandbox example prints what it promises."""
    assert run_block(readme_block("PodmanBackend")) == "hi\n\n/tmp\n1\n\n"


def test_readme_proxy_example_runs():
    """The README's interception example: a tool call, then text, both recorded."""
    lines = run_block(readme_block("InterceptionProxy")).splitlines()
    assert lines[0] == "bash {'command': 'ls'} | All done."
    assert lines[1] == "[('/v1/messages', 200), ('/v1/messages', 200)]"


def test_readme_dataset_example_runs():
    """The README's dataset example loads the bundled tasks."""
    assert run_block(readme_block("load_dataset")).startswith("16 swe ")


def test_readme_gym_loop_runs():
    """The README's gym loop: the first request, a tool call, a final text, the verifier's reward."""
    lines = run_block(readme_block("gym.make")).splitlines()
    assert lines[0].startswith("1 main {")
    assert lines[1] == "0.0 True ok True"  # running the tests fixes nothing: reward 0, validly


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
