"""A cheap "is this awaitable?" for the per-replicate path.

``inspect.isawaitable`` goes through an ABC check for every plain value; steps return
plain values almost always, so those are answered by one set lookup.
"""

from __future__ import annotations

import inspect
from typing import Any

_PLAIN_TYPES: frozenset[type] = frozenset({type(None), bool, int, float, complex, str, bytes, dict, list, tuple, set})


def is_awaitable(value: Any) -> bool:
    """``inspect.isawaitable(value)``, fast for the built-in types a step usually returns."""
    return type(value) not in _PLAIN_TYPES and inspect.isawaitable(value)
