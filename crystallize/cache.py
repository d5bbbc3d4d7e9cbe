"""The step cache: a cacheable step's output is reused only where recomputing it would give the same value.

An entry is keyed in two layers. The *base key* covers what is known before the
step runs: the step's identity (its code and the user code it reaches, made on the
driver), its parameters, the context values injected into it, and its input. The
*full key* adds what only running the step reveals: the context keys it read in its
body (their values, or their absence), the replicate's ``ctx.rng`` stream when it
drew from it, and the state of the global ``random``/``numpy.random`` generators
when it drew from those. Every read-set a step has shown is kept beside its entries
(``<fingerprint>/reads``), so a lookup recomputes the full key for each and loads the
entry stored under it; an entry whose recorded reads disagree is not trusted.

Entries live in the cache store (``.cache/`` or ``$CRYSTALLIZE_CACHE_URI``) at
``<step fingerprint>/<full key>``, written atomically, checksummed and signed with the
run's cache key (``$CRYSTALLIZE_CACHE_KEY`` or the per-user key file, read on the driver
and shipped in the run spec): a corrupt, unsigned or mis-signed entry is recomputed,
never unpickled. A read-set file that is lost or stale costs a recomputation, never a
wrong answer, because the full key holds every value the step looked at.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import CacheError, StorePathError, UntrustedEntry
from .hashing import stable_hash
from .store import layout
from .store.codec import CacheEntry, CorruptEntry, decode, encode_parts
from .store.filesystem import Store
from .store.locations import cache_signing_key

if TYPE_CHECKING:
    from .context import FrozenContext
    from .steps import PipelineStep

logger = logging.getLogger(__name__)

__all__ = ["CacheBackend", "CacheEntry", "ReadSet", "StepCache", "cache_key", "full_key", "global_rng_digest"]

ABSENT = "<absent>"


@dataclass(frozen=True)
class ReadSet:
    """What a step looked at while it ran, beyond its base key."""

    keys: tuple[str, ...] = ()
    rng: bool = False
    global_rng: bool = False

    def to_json(self) -> str:
        return json.dumps({"keys": list(self.keys), "rng": self.rng, "global_rng": self.global_rng}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReadSet:
        raw = json.loads(text)
        return cls(tuple(str(k) for k in raw["keys"]), bool(raw["rng"]), bool(raw["global_rng"]))


def _hash_error(step_name: str, exc: Exception) -> CacheError:
    if isinstance(exc, RecursionError):
        return CacheError(
            f"step '{step_name}' is cacheable but its input cannot be hashed: "
            "it contains a reference cycle or is nested too deeply"
        )
    return CacheError(f"step '{step_name}' is cacheable but its input cannot be hashed: {exc}")


def cache_key(step: PipelineStep, data: Any, ctx: FrozenContext, fingerprint: str | None = None) -> str:
    """The base key: step identity, explicit and injected parameters, and the input data."""
    try:
        return stable_hash(fingerprint or step.fingerprint, step.context_values(ctx), data)
    except (CacheError, RecursionError) as exc:
        raise _hash_error(step.name, exc) from exc


def full_key(base: str, reads: ReadSet, ctx: FrozenContext, *, stage: int, global_digest: str) -> str:
    """The base key plus the values behind a read-set, as this replicate's context has them."""
    values = ctx._data
    read_values = [(key, values[key]) if key in values else (key, ABSENT) for key in reads.keys]
    extra: list[Any] = []
    if reads.rng:
        extra.append(("rng", ctx._rng_seed, stage))
    if reads.global_rng:
        extra.append(("global_rng", global_digest))
    return stable_hash(base, read_values, extra)


def global_rng_digest() -> str:
    """A digest of the global ``random`` and ``numpy.random`` states (cheap: no Python-level loop)."""
    import numpy as np

    hasher = hashlib.blake2b(digest_size=16)
    version, internal, gauss = random.getstate()
    hasher.update(struct.pack(f"<{len(internal)}Q", *internal))
    hasher.update(repr((version, gauss)).encode())
    name, keys, pos, has_gauss, cached = np.random.get_state()
    hasher.update(np.ascontiguousarray(keys).tobytes())
    hasher.update(repr((name, pos, has_gauss, cached)).encode())
    return hasher.hexdigest()


def global_rng_state() -> dict[str, Any]:
    """The global generators' state in a JSON-friendly form (restored on a cache hit)."""
    import numpy as np

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "random": [version, list(internal), gauss],
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }


def restore_global_rng(state: dict[str, Any]) -> None:
    import numpy as np

    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


Resolver = Callable[[ReadSet], "str | None"]


class CacheBackend(Protocol):
    """What a replicate needs of a step cache: :class:`StepCache`, or one that wraps it (Ray's shared cache).

    A backend may also have ``abandon(step, fingerprint, base)``, called when a step it was asked
    about fails or cannot be keyed (so replicates waiting on that result compute it themselves).
    """

    def lookup(self, step: PipelineStep, fingerprint: str, base: str, resolve: Resolver) -> CacheEntry | None: ...

    def save(
        self, step: PipelineStep, fingerprint: str, base: str, reads: ReadSet, key: str, entry: CacheEntry
    ) -> None: ...


class _DriverKey:
    """Default of ``StepCache(key=...)``: read the key here (the driver's way), not from a spec."""


DRIVER_KEY = _DriverKey()


class StepCache:
    """Reads and writes cache entries and read-sets in a store, signed with one key.

    Workers pass the key that came in the run spec; ``StepCache(root)`` (the default) reads it
    the driver's way, from ``$CRYSTALLIZE_CACHE_KEY`` or the per-user key file. With
    ``key=None`` nothing is loaded or written (an unsigned entry is never trusted).
    A refused entry is recomputed; the first refusal of each kind is a warning, the rest of
    the run (this object) logs them at debug level.
    """

    def __init__(self, root: str | Store, key: bytes | _DriverKey | None = DRIVER_KEY) -> None:
        self.store = root if isinstance(root, Store) else Store(root)
        self.key: bytes | None = cache_signing_key() if isinstance(key, _DriverKey) else key
        self._read_sets: dict[str, list[ReadSet]] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._swept: set[str] = set()

    def __repr__(self) -> str:
        return f"StepCache({self.store.location!r})"  # never the key

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        with self._lock:
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            logger.warning(message + " Further ones in this run are logged at debug level.", *args)
        else:
            logger.debug(message, *args)

    @property
    def root(self) -> str:
        return self.store.location

    # ------------------------------------------------------------------ read-sets

    def read_sets(self, fingerprint: str, *, refresh: bool = False) -> list[ReadSet]:
        """The read-sets this step has shown (kept in memory; re-read from the store when none are known)."""
        known = self._read_sets.get(fingerprint)
        if known and not refresh:
            return known
        try:
            raw = json.loads(self.store.read_bytes(layout.cache_read_sets(fingerprint)))
            loaded = [ReadSet.from_json(item) for item in raw]
        except FileNotFoundError:
            loaded = []
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Read-set file of step fingerprint %s is unreadable (%s); ignoring it.", fingerprint, exc)
            loaded = []
        with self._lock:
            merged = list(self._read_sets.get(fingerprint, []))
            merged.extend(r for r in loaded if r not in merged)
            self._read_sets[fingerprint] = merged
        return merged

    def _remember(self, fingerprint: str, reads: ReadSet) -> None:
        known = self.read_sets(fingerprint, refresh=True)
        if reads in known:
            return
        with self._lock:
            known = self._read_sets.setdefault(fingerprint, [])
            if reads not in known:
                known.append(reads)
            payload = json.dumps([r.to_json() for r in known]).encode()
        # Lost updates between concurrent writers only cost a later recomputation.
        self.store.write_bytes(layout.cache_read_sets(fingerprint), payload)

    # ------------------------------------------------------------------ entries

    def lookup(self, step: PipelineStep, fingerprint: str, base: str, resolve: Resolver) -> CacheEntry | None:
        """The entry for this replicate, trying every known read-set; None on a miss."""
        for reads in self.read_sets(fingerprint):
            key = resolve(reads)
            if key is None:
                continue
            entry = self.load(step, fingerprint, key)
            if entry is not None and ReadSet(tuple(entry.reads), entry.rng, entry.global_rng) == reads:
                return entry
        return None

    def load(self, step: PipelineStep, fingerprint: str, key: str) -> CacheEntry | None:
        if self.key is None:
            self._warn_once("no-key", "The step cache has no signing key; step '%s' runs without it.", step.name)
            return None
        relative = layout.cache_entry(fingerprint, key)
        try:
            blob = self.store.read_bytes(relative)
        except FileNotFoundError:
            return None
        except (StorePathError, OSError) as exc:  # a folder, a link out of the root, unreadable: a miss
            self._warn_once(
                "unreadable",
                "Cache entry of step '%s' at %s cannot be read (%s); recomputing it.",
                step.name,
                relative,
                exc,
            )
            return None
        try:
            return decode(blob, self.key)
        except CorruptEntry as exc:
            kind = "untrusted" if isinstance(exc, UntrustedEntry) else "corrupt"
            self._warn_once(
                kind,
                "Cache entry of step '%s' at %s is " + kind + " (%s); recomputing it, nothing in it was loaded.",
                step.name,
                self.store.uri(relative),
                exc,
            )
            return None

    def save(
        self, step: PipelineStep, fingerprint: str, base: str, reads: ReadSet, key: str, entry: CacheEntry
    ) -> None:
        if self.key is None:
            return
        if fingerprint not in self._swept:  # once per step folder and process: half-written leftovers
            self._swept.add(fingerprint)
            self.store.remove_stale_temporaries(layout.cache_dir(fingerprint), recursive=False)
        relative = layout.cache_entry(fingerprint, key)
        try:
            self.store.write_bytes(relative, encode_parts(entry, self.key))
        except OSError:
            if not self.store.is_dir(relative):
                raise
            self._warn_once(
                "unwritable", "Cache entry of step '%s' at %s is a folder; not replacing it.", step.name, relative
            )
            return
        self._remember(fingerprint, reads)
