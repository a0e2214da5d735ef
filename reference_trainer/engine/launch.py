"""Starting rollout servers as subprocesses on this machine, and waiting until they answer.

Each server is ``python -m sglang.launch_server --model-path ... --host ... --port ...`` (or any module
that takes those flags: tests start kwaigym's own ``reference_trainer.engine.server``), its output in
a log file. ``wait_ready`` polls ``GET /health_generate`` (a real one-token generation) until it
answers 200; a server whose process exits, or that is not ready in time, fails with the tail of its
log, since that is where the reason is (out of memory, a bad model path, a missing kernel).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import tenacity

from kwaigym.errors import ConfigError, InfraError

log = logging.getLogger(__name__)


class ServerProcess:
    """One launched server: its URL, process and log file."""

    def __init__(self, url: str, process: subprocess.Popen, log_path: Path):
        self.url, self.process, self.log_path = url, process, log_path

    def tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; a process already gone is fine."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    model_path: str | Path,
    *,
    host: str,
    port: int,
    gpus: Sequence[int] | None,
    args: Sequence[str],
    module: str,
    env: dict[str, str],
    log_dir: Path,
    index: int,
) -> ServerProcess:
    """Start one server process (not waiting for it); ``gpus`` become its ``CUDA_VISIBLE_DEVICES``."""
    command = [
        sys.executable,
        "-m",
        module,
        "--model-path",
        str(model_path),
        "--host",
        host,
        "--port",
        str(port),
    ]
    child_env = os.environ | env
    if gpus is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        if len(gpus) > 1:
            command += ["--tp-size", str(len(gpus))]
    command += list(args)
    log_path = log_dir / f"server-{index}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
        )
    log.info("started %s (pid %d), log %s", " ".join(command), process.pid, log_path)
    return ServerProcess(f"http://{host}:{port}", process, log_path)


class _NotReady(Exception):
    pass


def wait_ready(server: ServerProcess, timeout_s: float) -> None:
    """Block until ``GET /health_generate`` answers 200; ``InfraError`` with the log tail otherwise."""

    def probe() -> None:
        if (code := server.process.poll()) is not None:
            raise ConfigError(
                f"the server for {server.url} exited with code {code} before it was ready; "
                f"its log ({server.log_path}) ends:\n{server.tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/health_generate", timeout=10) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            raise _NotReady(str(exc)) from exc
        raise _NotReady("not ready")

    try:
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_NotReady),
            stop=tenacity.stop_after_delay(timeout_s),
            wait=tenacity.wait_fixed(0.5),
            reraise=True,
        ):
            with attempt:
                probe()
    except _NotReady:
        raise InfraError(
            f"the server for {server.url} was not ready after {timeout_s:.0f}s; raise ready_timeout_s "
            f"if the model is large; its log ({server.log_path}) ends:\n{server.tail()}"
        ) from None


def launch_all(
    model_path: str | Path,
    *,
    gpus: Sequence[Sequence[int]] | None,
    host: str,
    port: int,
    args: Sequence[str],
    module: str,
    env: dict[str, str],
    ready_timeout_s: float,
    log_dir: str | Path | None,
) -> list[ServerProcess]:
    """Start one server per GPU group (ports ``port``, ``port + 10``, ...) and wait for all of them;
    on any failure every started one is stopped before the error goes up."""
    if not Path(model_path, "config.json").is_file():
        raise ConfigError(f"launch: {model_path} is not a model directory (no config.json)")
    directory = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="rollout-servers-"))
    directory.mkdir(parents=True, exist_ok=True)
    groups: list[Sequence[int] | None] = list(gpus) if gpus else [None]
    servers: list[ServerProcess] = []
    try:
        for i, group in enumerate(groups):
            servers.append(
                start(
                    model_path,
                    host=host,
                    port=port + 10 * i,
                    gpus=group,
                    args=args,
                    module=module,
                    env=env,
                    log_dir=directory,
                    index=i,
                )
            )
        deadline = time.monotonic() + ready_timeout_s
        for server in servers:
            wait_ready(server, max(deadline - time.monotonic(), 1.0))
    except BaseException:
        for server in servers:
            server.stop(grace_s=10)
        raise
    return servers
