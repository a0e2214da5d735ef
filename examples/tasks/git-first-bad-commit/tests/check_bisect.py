"""Recompute the first failing commit between v1.0 and main and compare it with /workspace/first_bad.txt."""

import io
import os
import subprocess
import sys
import tarfile
import tempfile

REPO = "/workspace/repo"
MAIN, V10 = sys.argv[1], sys.argv[2]  # where main and v1.0 must still point


def git(*args):
    return subprocess.run(
        ["git", "-C", REPO, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def passes(commit):
    """Run check.sh on a clean export of ``commit``."""
    data = subprocess.run(["git", "-C", REPO, "archive", commit], check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(fileobj=io.BytesIO(data)).extractall(tmp)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        return (
            subprocess.run(["sh", "check.sh"], cwd=tmp, env=env, capture_output=True, timeout=60).returncode
            == 0
        )


def check():
    if git("rev-parse", "refs/heads/main") != MAIN or git("rev-parse", "refs/tags/v1.0^{commit}") != V10:
        return "main or v1.0 no longer points to the original commit"
    try:
        answer = open("/workspace/first_bad.txt").read().strip()
    except OSError:
        return "/workspace/first_bad.txt is missing"
    commits = git("rev-list", "--reverse", f"{V10}..{MAIN}").split()
    expected = next((c for c in commits if not passes(c)), None)
    if expected is None:
        return "internal error: no failing commit found"
    if answer != expected:
        return f"first_bad.txt holds {answer[:60]!r}, which is not the first failing commit"
    return None


if __name__ == "__main__":
    problem = check()
    print(problem or "correct commit")
    sys.exit(1 if problem else 0)
