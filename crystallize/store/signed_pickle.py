"""Pickled artifacts signed with the run's key, so reading one back never runs foreign code.

A config's ``pickle`` codec (``writer: pickle`` / ``loader: pickle``) stores Python objects as
artifacts. Unpickling runs whatever the bytes say, and artifacts sit in a shared store, so a
pickle is written as ``MAGIC | HMAC-SHA256(key, MAGIC | payload) | payload`` and loaded only
when the HMAC matches. The key is the one that signs cache entries and run records
(:func:`crystallize.store.locations.cache_signing_key`): on the driver it is read there; in a
worker it is the key the run spec brought (:func:`use_key`), so workers never read key files.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

from ..errors import UntrustedEntry
from .locations import cache_signing_key

MAGIC = b"CRYSTALLIZE-SIGNED-PICKLE-1\n"
_DIGEST = hashlib.sha256().digest_size
_run_key: bytes | None = None


def use_key(key: bytes | None) -> None:
    """The key of the run this process works for (set when a worker prepares a run's spec)."""
    global _run_key
    if key is not None:
        _run_key = key


def _key() -> bytes:
    return _run_key if _run_key is not None else cache_signing_key()


def dumps(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=5)
    return MAGIC + hmac.new(_key(), MAGIC + payload, hashlib.sha256).digest() + payload


def loads(blob: bytes, *, what: str = "a pickled artifact") -> Any:
    """The object in ``blob``; an unsigned or mis-signed blob is refused before anything is unpickled."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _DIGEST:
        raise UntrustedEntry(
            f"{what} is not a signed Crystallize pickle, so it is not unpickled (that could run any code). "
            "Write it with the 'pickle' writer of this version, or store it as JSON, text or bytes."
        )
    mac, payload = blob[len(MAGIC) : len(MAGIC) + _DIGEST], blob[len(MAGIC) + _DIGEST :]
    expected = hmac.new(_key(), MAGIC + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise UntrustedEntry(
            f"{what} is signed with another key (or was altered), so it is not unpickled. Teams that share "
            "a store share one key: set CRYSTALLIZE_CACHE_KEY to the same secret for everyone."
        )
    return pickle.loads(payload)
