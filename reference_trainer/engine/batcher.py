"""A small dynamic batcher: calls from many threads that arrive close together run as one batch.

The local engine samples every waiting prompt in one ``generate`` call; this gathers them. Kept
apart from the engine because it knows nothing about models: ``run(prompts, params)`` is any
function from a list of work items to a list of results of the same length.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any


class Batcher:
    """Groups calls that arrive within ``window_s`` of the oldest waiting one into one batch.

    A worker thread runs while there is work and ends when the queue is empty, so an idle engine
    holds no thread.
    """

    def __init__(self, run, window_s: float, max_size: int):
        self.run, self.window_s, self.max_size = run, window_s, max_size
        self._cond = threading.Condition()
        self._queue: list[tuple[float, list[int], Any, Future]] = []
        self._worker: threading.Thread | None = None

    def submit(self, prompt: list[int], params: Any) -> Future:
        future: Future = Future()
        with self._cond:
            self._queue.append((time.monotonic(), prompt, params, future))
            self._cond.notify()
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="local-engine-batcher", daemon=True)
                self._worker.start()
        return future

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._worker = None
                    return
                deadline = self._queue[0][0] + self.window_s
                while len(self._queue) < self.max_size and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
            batch = [item for item in batch if item[3].set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                samples = self.run([item[1] for item in batch], [item[2] for item in batch])
            except BaseException as exc:  # every waiter hears of it; nothing hangs
                for item in batch:
                    item[3].set_exception(exc)
            else:
                for item, sample in zip(batch, samples, strict=True):
                    item[3].set_result(sample)
