"""Ctrl-C during a suite: the run in progress ends as ``interrupted``, its row is written whole,
and a second Ctrl-C leaves at once."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from deqbench.execution.worker import kill_live_workers


class DeferredInterrupt:
    """Ctrl-C (SIGINT) raises only while `armed` (inside a run); elsewhere (writing a row,
    the progress bar) it is noted in `pending` and acted on once the row is safely written.

    The first interrupt disarms, so it is recorded once; a second Ctrl-C kills any run worker
    and exits at once with code 130 (rows are written whole, so none is cut). Off the main
    thread (where Python cannot take signals) it does nothing, and Ctrl-C behaves as before.
    """

    def __init__(self) -> None:
        self.armed = False
        self.pending = False
        self.taken = False  #: a Ctrl-C was had; the next one exits at once
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.taken:  # a second Ctrl-C: leave now (rows are written whole, see results)
            kill_live_workers()
            os._exit(130)
        self.taken = True
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
