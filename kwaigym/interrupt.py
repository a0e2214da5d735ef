"""SIGTERM ends a command the way Ctrl-C does, so its sandboxes are removed.

Python's default SIGTERM kills the process on the spot: no ``finally`` runs, and the containers of
the episodes in flight outlive it (podman keeps them; only our private podman service dies with
us). Raising ``KeyboardInterrupt`` instead lets ``asyncio.run`` cancel every task and wait for it,
so each episode's cleanup runs. Job schedulers and ``timeout`` stop work with SIGTERM.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["sigterm_as_interrupt"]


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise ``KeyboardInterrupt`` (a no-op outside the main thread, where Python
    cannot install handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
