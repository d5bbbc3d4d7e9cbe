"""Grouping tasks into batches so short replicates do not pay per-task overhead.

:class:`AdaptiveBatcher` sizes batches by time, for every executor that ships batches
to workers: each batch aims at ``target_seconds`` of work, learned from the replicates'
own durations as the run goes. Short batches keep progress smooth, make the first
estimate (and the ETA) arrive early, and bound what an interrupt or a crashed worker
loses; enough replicates per batch keep the per-batch overhead small. Batch sizes never
change results: every replicate's seed and inputs come from its task alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

TARGET_BATCH_SECONDS = 0.05
MAX_BATCH = 4096


def batch_size_for(total: int, workers: int, *, per_worker: int = 8, cap: int = 512) -> int:
    """Enough batches to keep every worker busy and balance the tail, few enough to be cheap."""
    if total <= 0:
        return 1
    return max(1, min(cap, math.ceil(total / (max(1, workers) * per_worker))))


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class AdaptiveBatcher:
    """How many replicates the next batch gets: about ``target_seconds`` of work, learned as the run goes.

    * Before anything is learned, batches hold ``first`` replicate(s), so the first
      durations (and the progress bar's ETA) come back as soon as possible.
    * After that a batch holds ``target_seconds / mean replicate seconds`` (a moving
      average of what :meth:`learn` was told), growing at most ``growth``-fold from one
      batch to the next, so one unusually fast early replicate cannot send out a huge
      batch of slow ones; at most ``cap``.
    * The tail is spread: a batch never takes more than ``remaining / (workers *
      tail_share)``, so the last replicates go out to every worker in small pieces.
    * An explicit ``batch_size`` wins over all of this (only cut to what remains).

    Executor-neutral: it sees only counts and seconds, so the thread and process pools
    and the Ray scheduler can share it.
    """

    def __init__(
        self,
        workers: int,
        *,
        target_seconds: float = TARGET_BATCH_SECONDS,
        batch_size: int | None = None,
        first: int = 1,
        growth: float = 2.0,
        cap: int = MAX_BATCH,
        smoothing: float = 0.3,
        tail_share: int = 2,
    ) -> None:
        self.workers = max(1, workers)
        self.target_seconds = target_seconds
        self.batch_size = batch_size
        self.first = max(1, first)
        self.growth = max(1.0, growth)
        self.cap = max(1, cap)
        self.smoothing = smoothing
        self.tail_share = max(1, tail_share)
        self.seconds_per_replicate: float | None = None
        self.learned = 0  # replicates whose durations have been learned
        self.given = 0  # batches sized so far
        self.largest = 0  # the largest batch size given
        self._last = 0

    def next_size(self, remaining: int) -> int:
        """The size of the next batch when ``remaining`` replicates are still to be sent (at least 1)."""
        if remaining <= 0:
            return 1
        if self.batch_size:
            size = min(self.batch_size, remaining)
        else:
            size = min(self._ideal(), self._tail(remaining), remaining)
        self.given += 1
        self._last = size
        if size > self.largest:
            self.largest = size
        return size

    def _ideal(self) -> int:
        if self.seconds_per_replicate is None:
            return self.first
        ideal = round(self.target_seconds / max(self.seconds_per_replicate, 1e-7))
        ceiling = max(self.first, int(max(self._last, 1) * self.growth))
        return max(1, min(ideal, ceiling, self.cap))

    def _tail(self, remaining: int) -> int:
        return max(1, math.ceil(remaining / (self.workers * self.tail_share)))

    def learn(self, seconds: Iterable[float]) -> None:
        """Fold one batch's replicate durations (seconds each) into the moving average."""
        total = 0.0
        count = 0
        for value in seconds:
            total += value
            count += 1
        if not count:
            return
        mean = total / count
        previous = self.seconds_per_replicate
        self.seconds_per_replicate = (
            mean if previous is None else (1 - self.smoothing) * previous + self.smoothing * mean
        )
        self.learned += count
