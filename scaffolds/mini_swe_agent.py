"""The ``mini-swe-agent`` adapter: SWE-agent's minimal agent (PyPI ``mini-swe-agent``), black box.

The bundle is ``pip install --target DIR mini-swe-agent==VERSION`` run with the host's
``python3.11`` (the Debian base image's Python, so compiled wheels match), mounted
read-only and put on ``PYTHONPATH``; the image's ``python3`` runs it. Headless:
``python3 -m minisweagent.run.mini -t TASK --yolo --exit-immediately`` with stdin at EOF.

Since v2 its default config (``mini.yaml``) speaks tool calls: one ``bash`` tool with a
string ``command``, through litellm as an OpenAI-compatible model (``openai/agent``) at
``OPENAI_BASE_URL``. It finishes when a command's output starts with the line
``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`` (what follows is the submission); a text
answer without a tool call is a format error, not an end. Cost tracking would reject
the unknown model (``MSWEA_COST_TRACKING=ignore_errors``), the first-run setup prompt is
skipped (``MSWEA_CONFIGURED``), and litellm uses its bundled cost map (no fetch).
After the run a one-line ``KWAIGYM_RESULT {json}`` with the trajectory's exit status
and submission is printed for :meth:`MiniSweAgentScaffold.outcome`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kwaigym.chat.types import Completion
from kwaigym.errors import HostSetupError
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult, Mount
from scaffolds.base import MOUNT_ROOT, AgentOutcome, tool_call
from scaffolds.npm import bundle_cache, cached_install

VERSION = "2.4.6"
PYTHON = "python3.11"  # the Debian 12 base image's python3
WORKDIR = "/workspace"
MODEL = "openai/agent"  # litellm's OpenAI-compatible provider; the proxy answers any model name
SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
STATE_DIR = "/tmp/mini-swe-agent"
TRAJECTORY = f"{STATE_DIR}/run.traj.json"
RESULT_PREFIX = "KWAIGYM_RESULT "

# "$@" is the mini argv; afterwards one line reports the trajectory's exit status and submission.
_SCRIPT = f"""python3 -m minisweagent.run.mini "$@" </dev/null
rc=$?
python3 -c 'import json, sys
try:
    info = json.load(open(sys.argv[1]))["info"]
except Exception:
    info = {{}}
print("{RESULT_PREFIX}" + json.dumps({{k: info.get(k, "") for k in ("exit_status", "submission")}}))' \
"{TRAJECTORY}"
exit $rc"""


# Wheels are kept in a wheelhouse beside the bundles, so a reinstall (a new bundle cache, or a
# benchmark of a fresh install) can run offline with PIP_NO_INDEX=1 and PIP_FIND_LINKS=WHEELHOUSE.
_PIP_SCRIPT = """set -e
"$1" -m pip download --quiet --disable-pip-version-check --no-input --dest "$2" "$4"
"$1" -m pip install --quiet --disable-pip-version-check --no-input --no-index --find-links "$2" \\
    --target "$3" "$4"
"""


def wheelhouse(cache: Path | None = None) -> Path:
    """Where pip bundles keep the wheels they were installed from."""
    return (cache or bundle_cache()) / "wheels"


def pip_bundle(package: str, version: str, *, cache: Path | None = None, timeout: float = 900) -> Path:
    """``pip install --target`` ``package==version`` once with the host's python3.11; return the dir.

    Raises:
        HostSetupError: python3.11 is missing or the install failed (its output tail is in the message).
    """
    python = shutil.which(PYTHON)
    if python is None:
        raise HostSetupError(f"installing {package}=={version} needs {PYTHON} on the host")
    cache = cache or bundle_cache()
    requirement = f"{package}=={version}"
    return cached_install(
        cache, f"{package}-{version}", requirement,
        lambda into: ["sh", "-c", _PIP_SCRIPT, "pip-bundle", python, str(wheelhouse(cache)), str(into),
                      requirement], timeout,
    )  # fmt: skip


class MiniSweAgentScaffold:
    """mini-swe-agent, speaking the OpenAI Chat Completions API through litellm."""

    name = "mini-swe-agent"
    wire_format = "openai-chat"
    target = f"{MOUNT_ROOT}/mini-swe-agent"

    def __init__(self, version: str = VERSION):
        self.version = version

    def install(self) -> Path:
        return pip_bundle("mini-swe-agent", self.version)

    def mounts(self, bundle: Path) -> list[Mount]:
        return [Mount(source=str(bundle), target=self.target)]

    def command(self, instruction: str) -> list[str]:
        return ["sh", "-c", _SCRIPT, "mini-swe-agent", "-m", MODEL, "--yolo", "--exit-immediately",
                "--cost-limit", "0", "-o", TRAJECTORY,
                "-c", "mini.yaml", "-c", f"environment.cwd={WORKDIR}",
                "-c", "model.model_kwargs.timeout=3600",  # slow policies: wait up to an hour
                "-t", instruction]  # fmt: skip

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "PYTHONPATH": self.target,
            "PYTHONDONTWRITEBYTECODE": "1",  # the bundle is read-only
            "OPENAI_BASE_URL": f"{route.base_url}/v1",
            "OPENAI_API_BASE": f"{route.base_url}/v1",
            "OPENAI_API_KEY": route.token,
            "MSWEA_CONFIGURED": "1",  # skip the interactive first-run setup
            "MSWEA_COST_TRACKING": "ignore_errors",  # the model is unknown to litellm's cost map
            "MSWEA_GLOBAL_CONFIG_DIR": STATE_DIR,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at import
            "LITELLM_TELEMETRY": "False",
            "HOME": "/root",
        }

    def shell_call(self, command: str, call_id: str) -> Completion:
        return tool_call("bash", call_id, command=command)

    def finish(self, message: str, call_id: str) -> Completion:
        """mini-swe-agent ends when a command's output starts with its submit marker, not on text."""
        return self.shell_call(SUBMIT, call_id)

    def outcome(self, result: ExecResult) -> AgentOutcome:
        """Read the ``KWAIGYM_RESULT`` line: ok when the agent submitted; the submission is the message."""
        info = None
        for line in result.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                try:
                    info = json.loads(line[len(RESULT_PREFIX) :])
                except ValueError:
                    info = None
        if not isinstance(info, dict):
            return AgentOutcome(exit_code=result.exit_code, final_message=result.output.strip(), ok=False)
        status, submission = str(info.get("exit_status", "")), str(info.get("submission", ""))
        ok = result.ok and status == "Submitted"
        message = submission.strip() or (
            status if ok else f"{status or 'no exit status'}: {result.output.strip()}"
        )
        return AgentOutcome(exit_code=result.exit_code, final_message=message, ok=ok)
