"""SIGTERM ends a command the way Ctrl-C does, so its sandboxes are removed.

Python's default SIGTERM kills the process on the spot: no ``finally`` runs, and the containers of
the episodes in flight outlive it (podman keeps them; only our private podman service dies with
us). Job schedulers and ``timeout`` stop work with SIGTERM.

The handler hands the signal to whatever handles SIGINT at that moment, rather than raising
``KeyboardInterrupt`` itself: inside ``asyncio.run`` that is the runner's own handler, which
cancels the main task (so every episode's cleanup runs) and raises ``KeyboardInterrupt`` once the
task has unwound. An exception raised straight from a signal handler can land in a ``__del__`` or
a callback, where Python prints and drops it, and the command would run on.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["sigterm_as_interrupt"]


def _as_sigint(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or left to the OS: still stop, as Ctrl-C would by default.
        raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Make SIGTERM act as Ctrl-C (a no-op outside the main thread, where Python cannot install
    handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_sigint)
