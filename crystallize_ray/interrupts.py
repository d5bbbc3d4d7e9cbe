"""Ctrl-C during a Ray run, made reliable.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. If that is a
finalizer (an object reference collected mid-loop) or a callback from C, the exception is
printed as "ignored" and lost, and the run goes on to the end. While the scheduling loop
runs, a first Ctrl-C only sets a flag that the loop checks after every wait (at most half a
second apart); a second one raises at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class InterruptGuard:
    """Turns SIGINT into a flag for the duration of a ``with`` block (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since the block began."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
