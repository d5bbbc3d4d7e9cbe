"""Grouping tasks into batches so short replicates do not pay per-task overhead."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def batch_size_for(total: int, workers: int, *, per_worker: int = 8, cap: int = 512) -> int:
    """Enough batches to keep every worker busy and balance the tail, few enough to be cheap."""
    if total <= 0:
        return 1
    return max(1, min(cap, math.ceil(total / (max(1, workers) * per_worker))))


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
