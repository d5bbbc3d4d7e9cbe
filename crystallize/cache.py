"""The step cache: a cacheable step's output, metrics and artifacts, keyed by everything that shaped them.

Key = hash(step code + explicit params, context values the step was given, input data).
Entries live in the cache store (``.cache/`` or ``$CRYSTALLIZE_CACHE_URI``) at
``<step fingerprint>/<key>``, written atomically and checksummed (and signed when
``$CRYSTALLIZE_CACHE_KEY`` is set): a corrupt or unsigned entry is recomputed, never trusted.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import CacheError
from .hashing import stable_hash
from .store import layout
from .store.codec import CacheEntry, CorruptEntry, decode, encode_parts, signing_key
from .store.filesystem import Store

logger = logging.getLogger(__name__)

__all__ = ["CacheEntry", "StepCache", "cache_key"]


def cache_key(step: Any, data: Any, ctx: Any) -> str:
    try:
        return stable_hash(step.fingerprint, step.context_values(ctx), data)
    except CacheError as exc:
        raise CacheError(f"step '{step.name}' is cacheable but its input cannot be hashed: {exc}") from exc
    except RecursionError as exc:
        raise CacheError(
            f"step '{step.name}' is cacheable but its input cannot be hashed: "
            "it contains a reference cycle or is nested too deeply"
        ) from exc


class StepCache:
    """Reads and writes cache entries in a store; the signing key is read once per process."""

    def __init__(self, root: str | Store) -> None:
        self.store = root if isinstance(root, Store) else Store(root)
        self.key = signing_key()

    @property
    def root(self) -> str:
        return self.store.location

    def load(self, step: Any, key: str) -> CacheEntry | None:
        relative = layout.cache_entry(step.fingerprint, key)
        try:
            blob = self.store.read_bytes(relative)
        except FileNotFoundError:
            return None
        try:
            return decode(blob, self.key)
        except CorruptEntry as exc:
            logger.warning(
                "Cache entry of step '%s' at %s is corrupt or untrusted (%s); recomputing it.",
                step.name,
                self.store.uri(relative),
                exc,
            )
            return None

    def save(self, step: Any, key: str, entry: CacheEntry) -> None:
        parts = encode_parts(entry, self.key)
        self.store.write_bytes(layout.cache_entry(step.fingerprint, key), parts)
