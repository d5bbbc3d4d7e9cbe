"""Conformance suites a backend author runs against their own executor or store (they need pytest).

``ExecutorConformance`` (:mod:`.executor_suite`): results must not depend on the executor.
``StoreConformance`` (:mod:`.store_suite`): the ``Store`` API on a storage backend. Subclass
one in a test module of your own; the class docstrings say what to provide.

The suites are imported on first use, so workers that import :mod:`.steps` (the suite's
steps, shipped by reference) need neither pytest nor the suites. ``import crystallize`` does
not import this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .executor_suite import ExecutorConformance
    from .store_suite import StoreConformance

__all__ = ["ExecutorConformance", "StoreConformance"]

_HOMES = {"ExecutorConformance": ".executor_suite", "StoreConformance": ".store_suite"}


def __getattr__(name: str) -> type:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
