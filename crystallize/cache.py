"""The step cache: a cacheable step's output, metrics and artifacts, keyed by everything that shaped them.

Key = hash(step code + explicit params, context values the step was given, input data).
Entries are checksummed and written atomically (temp file + rename), so a reader
never sees half an entry and a corrupt one is recomputed, not trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from .errors import CacheError
from .hashing import stable_hash

logger = logging.getLogger(__name__)

_MAGIC = b"CRYSTALLIZE-CACHE-1\n"
_DIGEST_BYTES = 32


@dataclass
class CacheEntry:
    data: Any
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    artifacts: list[tuple[str, bytes]] = field(default_factory=list)


def default_cache_root() -> str:
    return os.environ.get("CRYSTALLIZE_CACHE_DIR", ".cache")


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
    """Entries live at ``<root>/<step fingerprint>/<key>``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, step: Any, key: str) -> Path:
        return self.root / step.fingerprint / key

    def load(self, step: Any, key: str) -> CacheEntry | None:
        path = self._path(step, key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        entry = _decode(blob)
        if entry is None:
            logger.warning("Cache entry for step '%s' at %s is corrupt; recomputing it.", step.name, path)
        return entry

    def save(self, step: Any, key: str, entry: CacheEntry) -> None:
        path = self._path(step, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = _encode(entry)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _encode(entry: CacheEntry) -> bytes:
    payload = cloudpickle.dumps(entry)
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def _decode(blob: bytes) -> CacheEntry | None:
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _DIGEST_BYTES:
        return None
    digest = blob[len(_MAGIC) : len(_MAGIC) + _DIGEST_BYTES]
    payload = blob[len(_MAGIC) + _DIGEST_BYTES :]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        entry = cloudpickle.loads(payload)
    except Exception:
        return None
    return entry if isinstance(entry, CacheEntry) else None
