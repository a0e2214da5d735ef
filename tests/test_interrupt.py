"""SIGTERM acts as Ctrl-C: inside ``asyncio.run`` it cancels the main task (cleanup runs, the
signal never surfaces mid-statement), outside it raises ``KeyboardInterrupt``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

ASYNC_SCRIPT = """
import asyncio, signal, sys
from kwaigym.interrupt import sigterm_as_interrupt

async def main():
    try:
        signal.raise_signal(signal.SIGTERM)
        print("next statement ran", flush=True)  # the handler raised nothing here
        await asyncio.sleep(30)
        print("slept through", flush=True)
    finally:
        print("cleanup ran", flush=True)

sigterm_as_interrupt()
try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(130)
"""

SYNC_SCRIPT = """
import signal, sys, time
from kwaigym.interrupt import sigterm_as_interrupt

sigterm_as_interrupt()
try:
    signal.raise_signal(signal.SIGTERM)
    time.sleep(30)
except KeyboardInterrupt:
    sys.exit(130)
"""


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )


def test_sigterm_in_asyncio_run_cancels_the_main_task_and_exits_as_ctrl_c():
    done = run(ASYNC_SCRIPT)
    assert done.returncode == 130, done.stderr
    assert done.stdout.split("\n")[:2] == ["next statement ran", "cleanup ran"]


def test_sigterm_outside_asyncio_raises_keyboard_interrupt():
    done = run(SYNC_SCRIPT)
    assert done.returncode == 130, done.stderr
