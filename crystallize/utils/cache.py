"""Compatibility path; the real code is in `crystallize.cache` and `crystallize.hashing`."""

from typing import Any

from crystallize.cache import CacheEntry, StepCache, cache_key
from crystallize.hashing import stable_hash


def compute_hash(obj: Any) -> str:
    """Hex digest of ``obj``: equal values give equal digests in every process and run.

    Crystallize 0.27 hashed the pickle bytes; this uses the canonical encoding of
    ``crystallize.hashing`` instead, so the digest does not depend on the pickle
    protocol, dict insertion order or set iteration order.
    """
    return stable_hash(obj)


__all__ = ["CacheEntry", "StepCache", "cache_key", "compute_hash"]
