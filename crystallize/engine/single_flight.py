"""One computation of a cacheable step per key at a time within a process.

Replicates running side by side on threads would otherwise all miss the cache for the same
input and each compute the same expensive result. The first takes the key; the others wait
for it to finish and then read its entry. Only threads wait: a computation owned by the
waiting thread itself (async replicates interleaved on one event loop) is never waited for,
and neither is one whose thread has died.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

_POLL_SECONDS = 1.0


@dataclass
class _Flight:
    owner: threading.Thread
    done: threading.Event = field(default_factory=threading.Event)


_LOCK = threading.Lock()
_FLIGHTS: dict[tuple[object, str], _Flight] = {}


def scope_of(cache: object) -> object:
    """What a flight is keyed by: the cache's location (one per run and worker may be built), else the object."""
    root = getattr(cache, "root", None)
    return ("root", root) if isinstance(root, str) else ("object", id(cache))


def claim(scope: object, key: str) -> bool:
    """Take ``key`` for the calling thread (True), or wait while another live thread computes it (False).

    After False the caller looks in the cache again and, on a miss, claims again. ``scope`` is
    what :func:`scope_of` makes of the cache the key belongs to, so two caches never share a flight.
    """
    me = threading.current_thread()
    slot = (scope, key)
    with _LOCK:
        flight = _FLIGHTS.get(slot)
        if flight is None or not flight.owner.is_alive():
            _FLIGHTS[slot] = _Flight(me)
            return True
        if flight.owner is me:
            return True  # interleaved on this thread: waiting would wait for ourselves
    while not flight.done.wait(_POLL_SECONDS):
        if not flight.owner.is_alive():
            break
    return False


def release(scope: object, key: str) -> None:
    """The calling thread is done with ``key`` (computed, saved, failed or abandoned): wake the waiters."""
    me = threading.current_thread()
    slot = (scope, key)
    with _LOCK:
        flight = _FLIGHTS.get(slot)
        if flight is None or flight.owner is not me:
            return
        del _FLIGHTS[slot]
    flight.done.set()
