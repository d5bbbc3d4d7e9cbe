"""Fewer garbage collections while replicates stream through.

Each replicate allocates a few dozen short-lived containers, so CPython's default
threshold (a young collection every 700 allocations, and with it the older generations
now and then, which hold the run's growing results) costs about a tenth of a no-op
replicate. While any run streams in this process the young threshold is raised; it
goes back to what it was when the last one ends. Nothing here changes what is kept:
unreachable cycles are still collected, a little later.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_YOUNG_THRESHOLD = 20_000
_LOCK = threading.Lock()
_ACTIVE = 0
_SAVED: tuple[int, int, int] | None = None


@contextlib.contextmanager
def relaxed() -> Iterator[None]:
    """Collect the young generation every ``_YOUNG_THRESHOLD`` allocations inside the block (nests, threads)."""
    global _ACTIVE, _SAVED
    with _LOCK:
        if _ACTIVE == 0:
            current = gc.get_threshold()
            _SAVED = (current[0], current[1], current[2])
            if 0 < current[0] < _YOUNG_THRESHOLD:
                gc.set_threshold(_YOUNG_THRESHOLD, current[1], current[2])
        _ACTIVE += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0 and _SAVED is not None:
                if gc.get_threshold()[0] == _YOUNG_THRESHOLD:  # unless someone set their own meanwhile
                    gc.set_threshold(*_SAVED)
                _SAVED = None
