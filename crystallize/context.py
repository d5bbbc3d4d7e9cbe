"""The per-replicate context: add-only values, metrics, artifacts and a logger.

Reads return the stored object itself (no deep copy), so a 10 MB array costs the
same to read as an int. NumPy arrays are stored as read-only views, which keeps
"immutable" honest for the most common large value at O(1) cost.
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import ContextMutationError, ParameterError

_LOGGER = logging.getLogger("crystallize")


def _read_only(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "flags") and value.flags.writeable:
        view = value.view()
        view.flags.writeable = False
        return view
    return value


class MetricsCollector:
    """Metric values recorded during one replicate, in the order they were added."""

    __slots__ = ("_tags", "_values")

    def __init__(self) -> None:
        self._values: dict[str, list[Any]] = {}
        self._tags: dict[str, dict[int, dict[str, Any]]] = {}  # metric -> position of a tagged value -> its tags

    def add(self, name: str, value: Any, tags: Mapping[str, Any] | None = None) -> None:
        """Append ``value`` to metric ``name``; a metric may be recorded several times."""
        if type(name) is not str or not name:
            if not isinstance(name, str) or not name:
                raise ParameterError(f"metric name must be a non-empty string, got {name!r}")
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = []
        if tags:  # kept by position, only where given: most values carry none
            self._tags.setdefault(name, {})[len(values)] = dict(tags)
        values.append(value)

    def __getitem__(self, name: str) -> tuple[Any, ...]:
        return tuple(self._values[name])

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_tags(self, name: str) -> tuple[dict[str, Any], ...]:
        """The tags of each value of ``name`` (``{}`` for a value recorded without tags)."""
        tags = self._tags.get(name, {})
        return tuple(dict(tags.get(i, {})) for i in range(len(self._values.get(name, ()))))

    def as_dict(self) -> Mapping[str, tuple[Any, ...]]:
        return MappingProxyType({k: tuple(v) for k, v in self._values.items()})

    def snapshot(self) -> dict[str, list[Any]]:
        """A plain copy, for moving metrics between processes."""
        return {k: list(v) for k, v in self._values.items()}

    def extend(self, values: Mapping[str, list[Any]]) -> None:
        for name, items in values.items():
            for item in items:
                self.add(name, item)


@dataclass
class ArtifactRecord:
    """Bytes a step asked to keep; ``step_name`` is filled in after the step ran."""

    name: str
    data: bytes
    step_name: str | None = None
    path: str | None = None


class ArtifactLog:
    """Artifacts added during a replicate, in order."""

    __slots__ = ("records",)

    def __init__(self, records: list[ArtifactRecord] | None = None) -> None:
        self.records: list[ArtifactRecord] = records if records is not None else []

    def __repr__(self) -> str:
        return f"ArtifactLog(records={self.records!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactLog) and self.records == other.records

    def add(self, name: str, data: bytes | bytearray | memoryview | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParameterError(
                f"artifact '{name}' must be bytes (or str), got {type(data).__name__}; "
                "serialize it first (for example with json.dumps(...).encode() or numpy.save)."
            )
        if any(r.name == name and r.step_name is None for r in self.records):
            raise ContextMutationError(
                f"Artifact '{name}' already written in this run: the step added it twice; "
                "give each artifact its own name"
            )
        self.records.append(ArtifactRecord(name=name, data=bytes(data)))

    def unassigned(self) -> list[ArtifactRecord]:
        return [r for r in self.records if r.step_name is None]

    def __iter__(self) -> Iterator[ArtifactRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def clear(self) -> None:
        self.records.clear()


_NOTHING_OVERRIDABLE: frozenset[str] = frozenset()  # shared by every context no callable treatment is running on


class FrozenContext:
    """Add-only mapping handed to datasources, treatments and steps.

    Rebinding a key raises :class:`ContextMutationError`, so a treatment cannot
    silently change what another step already read.

    Values that come from ``initial_ctx`` or a treatment are shared by every
    replicate, so each replicate gets its own deep copy of a mutable one on its
    first read (only if it is read): a step that appends to a list sees the list
    as given, under every executor, and ``experiment.initial_ctx`` never changes.
    Immutable values (numbers, strings, tuples of them, read-only NumPy arrays,
    Arrow tables, resource factories, functions) are never copied, so reading a
    10 MB array costs nanoseconds; reading a large *mutable* value (a list, a
    dict, a DataFrame) costs one ``copy.deepcopy`` per replicate.

    The context also remembers which keys were read (the cache keys entries by
    them and the run warns about treatment keys nothing read), and offers
    ``ctx.rng``, a NumPy ``Generator`` seeded from the replicate's seed.
    """

    __slots__ = (
        "_data",
        "_overridable",
        "_reads",
        "_rng",
        "_rng_seed",
        "_rng_stream",
        "_rng_used",
        "_shared",
        "_step_reads",
        "artifacts",
        "logger",
        "metrics",
    )

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._init_state(logger or _LOGGER)
        for key, value in (initial or {}).items():
            self.add(key, value)

    def _init_state(self, logger: logging.Logger) -> None:
        self._data: dict[str, Any] = {}
        self._shared: set[str] = set()
        # initial_ctx keys a callable treatment may set once (the engine puts a set here while it runs)
        self._overridable: set[str] | frozenset[str] = _NOTHING_OVERRIDABLE
        self._reads: set[str] = set()
        self._step_reads: set[str] | None = None
        self._rng: Any = None
        self._rng_seed: int | None = None
        self._rng_stream = 0
        self._rng_used = False
        self.metrics = MetricsCollector()
        self.artifacts = ArtifactLog()
        self.logger = logger

    # ------------------------------------------------------------------ reads

    def _read(self, key: str) -> Any:
        """The value of ``key`` for this replicate (copied from the shared one on first read)."""
        self._reads.add(key)
        if self._step_reads is not None:
            self._step_reads.add(key)
        value = self._data[key]
        if key in self._shared:
            self._shared.discard(key)
            value = private_copy(key, value)
            self._data[key] = value
        return value

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            self._note_missing(key)
            raise KeyError(f"'{key}' is not in the context; available keys: {sorted(self._data)}") from None
        return self._read(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._data:
            self._note_missing(key)
            return default
        return self._read(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._reads.add(key)
            if self._step_reads is not None:
                self._step_reads.add(key)
        return key in self._data

    def _note_missing(self, key: str) -> None:
        # A read of a missing key is still a read: the cache must know the step looked.
        self._reads.add(key)
        if self._step_reads is not None:
            self._step_reads.add(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.add(key, value)

    def add(self, key: str, value: Any) -> None:
        """Add ``key``; an existing key is never rebound.

        The one exception: while a callable treatment runs, it may set a key that only
        ``initial_ctx`` set, once; the treatment wins, as a mapping treatment's value does.
        """
        if key in self._data:
            if key not in self._overridable:
                raise ContextMutationError(
                    f"Cannot mutate existing key: '{key}'; contexts are add-only. "
                    "Use a new key name, or set the value through a treatment."
                )
            # in it means a callable treatment runs, and the engine gave it a set: a second add raises
            self._overridable.discard(key)  # type: ignore[union-attr]
            self._shared.discard(key)
        self._data[key] = _read_only(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        return self._data.keys()

    def as_dict(self) -> Mapping[str, Any]:
        """A read-only view of every value (this replicate's copies; counts as reading every key)."""
        for key in list(self._data):
            self._read(key)
        return MappingProxyType(self._data)

    def record(self, name: str, value: Any, tags: Mapping[str, Any] | None = None) -> None:
        """Same as ``ctx.metrics.add``."""
        self.metrics.add(name, value, tags)

    # ------------------------------------------------------------------ randomness

    @property
    def rng(self) -> Any:
        """A ``numpy.random.Generator`` for the current step, seeded from the replicate's seed.

        Each stage of a replicate (the datasource, then every step) draws from its own
        stream of ``SeedSequence(replicate seed, spawn_key=(stage,))``, so the draws are
        the same under every executor (threads included) and a step served from the cache
        does not shift what the steps after it draw.
        """
        self._rng_used = True
        if self._rng is None:
            import numpy as np

            seed = self._rng_seed
            if seed is None:
                seed = self._data.get("seed_used")
            sequence = np.random.SeedSequence(entropy=int(seed or 0), spawn_key=(self._rng_stream,))
            self._rng = np.random.Generator(np.random.PCG64(sequence))
        return self._rng

    def _begin_stage(self, stream: int) -> None:
        """The engine moves ``ctx.rng`` to the stream of the next stage."""
        self._rng = None
        self._rng_stream = stream
        self._rng_used = False

    # ------------------------------------------------------------------ engine

    def _raw_values(self) -> dict[str, Any]:
        """The stored values without copying or counting reads (freezing a spec)."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"FrozenContext(keys={sorted(self._data)})"

    @classmethod
    def _trusted(cls, values: dict[str, Any], *, shared: Iterable[str] = (), seed: int | None = None) -> FrozenContext:
        """Wrap values without re-checking them (the engine's fast path).

        ``shared`` names the keys whose values other replicates also hold: they are
        copied on first read when mutable.
        """
        ctx = cls.__new__(cls)
        ctx._data = values
        ctx._shared = set(shared)
        ctx._overridable = _NOTHING_OVERRIDABLE
        ctx._reads = set()
        ctx._step_reads = None
        ctx._rng = None
        ctx._rng_seed = seed
        ctx._rng_stream = 0
        ctx._rng_used = False
        ctx.metrics = MetricsCollector()
        ctx.artifacts = ArtifactLog()
        ctx.logger = _LOGGER
        return ctx

    def __reduce__(self) -> Any:
        return (_rebuild_context, (self._raw_values(), self.metrics.snapshot()))


_IMMUTABLE_TYPES: frozenset[type] = frozenset(
    {int, float, complex, bool, str, bytes, type(None), range, frozenset, type(Ellipsis)}
)
_COPY_WARNED: set[str] = set()


def _is_immutable(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE_TYPES:
        return True
    if kind is tuple:
        return depth < 4 and all(_is_immutable(item, depth + 1) for item in value)
    module = kind.__module__ or ""
    if module == "numpy":
        flags = getattr(value, "flags", None)
        return flags is None or not flags.writeable  # numpy scalars have no flags
    if module.startswith("pyarrow"):
        return True  # Arrow arrays, tables and scalars are immutable
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type)):
        return True
    from .resources import ResourceFactory

    return isinstance(value, ResourceFactory)


def private_copy(key: str, value: Any) -> Any:
    """This replicate's own copy of a shared value: none for immutable ones, a deep copy otherwise."""
    if _is_immutable(value):
        return value
    if type(value).__module__ == "numpy":
        return _read_only(value)
    try:
        return copy.deepcopy(value)
    except Exception as exc:  # noqa: BLE001 - some objects (locks, clients) refuse to be copied
        if key not in _COPY_WARNED:
            _COPY_WARNED.add(key)
            _LOGGER.warning(
                "Context value '%s' (%s) cannot be copied (%s); replicates share it, so a step that "
                "changes it changes what later replicates see. Wrap it in resource_factory(...) instead.",
                key,
                type(value).__name__,
                exc,
            )
        return value


def _rebuild_context(data: dict[str, Any], metrics: dict[str, list[Any]]) -> FrozenContext:
    ctx = FrozenContext(data)
    ctx.metrics.extend(metrics)
    return ctx
