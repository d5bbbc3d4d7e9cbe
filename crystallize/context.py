"""The per-replicate context: add-only values, metrics, artifacts and a logger.

Reads return the stored object itself (no deep copy), so a 10 MB array costs the
same to read as an int. NumPy arrays are stored as read-only views, which keeps
"immutable" honest for the most common large value at O(1) cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import ContextMutationError

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
        self._tags: dict[str, list[dict[str, Any]]] = {}

    def add(self, name: str, value: Any, tags: Mapping[str, Any] | None = None) -> None:
        """Append ``value`` to metric ``name``; a metric may be recorded several times."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric name must be a non-empty string, got {name!r}")
        self._values.setdefault(name, []).append(value)
        self._tags.setdefault(name, []).append(dict(tags or {}))

    def __getitem__(self, name: str) -> tuple[Any, ...]:
        return tuple(self._values[name])

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_tags(self, name: str) -> tuple[dict[str, Any], ...]:
        return tuple(self._tags.get(name, ()))

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


@dataclass
class ArtifactLog:
    """Artifacts added during a replicate, in order."""

    records: list[ArtifactRecord] = field(default_factory=list)

    def add(self, name: str, data: bytes | bytearray | memoryview | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"artifact '{name}' must be bytes (or str), got {type(data).__name__}; "
                "serialize it first (for example with json.dumps(...).encode() or numpy.save)."
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


class FrozenContext:
    """Add-only mapping handed to datasources, treatments and steps.

    Rebinding a key raises :class:`ContextMutationError`, so a treatment cannot
    silently change what another step already read.
    """

    __slots__ = ("_data", "artifacts", "logger", "metrics")

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._data: dict[str, Any] = {}
        self.metrics = MetricsCollector()
        self.artifacts = ArtifactLog()
        self.logger = logger or _LOGGER
        for key, value in (initial or {}).items():
            self.add(key, value)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(f"'{key}' is not in the context; available keys: {sorted(self._data)}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.add(key, value)

    def add(self, key: str, value: Any) -> None:
        """Add ``key``; an existing key is never rebound."""
        if key in self._data:
            raise ContextMutationError(
                f"Context key '{key}' is already set; contexts are add-only. "
                "Use a new key name, or set the value through a treatment."
            )
        self._data[key] = _read_only(value)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Any:
        return self._data.keys()

    def as_dict(self) -> Mapping[str, Any]:
        """A read-only view of the values (no copy)."""
        return MappingProxyType(self._data)

    def record(self, name: str, value: Any, tags: Mapping[str, Any] | None = None) -> None:
        """Same as ``ctx.metrics.add``."""
        self.metrics.add(name, value, tags)

    def __repr__(self) -> str:
        return f"FrozenContext(keys={sorted(self._data)})"

    @classmethod
    def _trusted(cls, values: dict[str, Any]) -> FrozenContext:
        """Wrap values that already passed ``add`` (the engine's fast path, no re-checking)."""
        ctx = cls.__new__(cls)
        ctx._data = values
        ctx.metrics = MetricsCollector()
        ctx.artifacts = ArtifactLog()
        ctx.logger = _LOGGER
        return ctx

    def __reduce__(self) -> Any:
        return (_rebuild_context, (dict(self._data), self.metrics.snapshot()))


def _rebuild_context(data: dict[str, Any], metrics: dict[str, list[Any]]) -> FrozenContext:
    ctx = FrozenContext(data)
    ctx.metrics.extend(metrics)
    return ctx
