"""Shipping the run spec to other processes, with errors that name what cannot travel."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import cloudpickle

from ..errors import SerializationError
from .plan import RunSpec

_HINT = (
    "Objects such as open files, locks, sockets, database connections or loaded models cannot be "
    "sent to worker processes. Build them inside the worker instead: wrap the builder with "
    "crystallize.resource_factory(...) and call it from the step."
)


def dumps(value: Any, what: str = "value") -> bytes:
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled: {type(exc).__name__}: {exc}. {_HINT}") from exc


def dumps_spec(spec: RunSpec) -> bytes:
    """The spec as bytes; on failure, find and name the part that does not pickle."""
    try:
        return cloudpickle.dumps(spec)
    except Exception as exc:
        culprit = find_unpicklable(spec)
        raise SerializationError(
            f"Experiment '{spec.name}': {culprit or 'the run spec'} cannot be pickled "
            f"({type(exc).__name__}: {exc}). {_HINT}"
        ) from exc


def dumps_conditions(conditions: Mapping[str, Any]) -> bytes:
    try:
        return cloudpickle.dumps(dict(conditions))
    except Exception as exc:
        for name, treatment in conditions.items():
            try:
                cloudpickle.dumps(treatment)
            except Exception:  # noqa: BLE001 - pickling raises many types
                raise SerializationError(f"treatment '{name}' cannot be pickled: {exc}. {_HINT}") from exc
        raise SerializationError(f"the treatments cannot be pickled: {exc}. {_HINT}") from exc


def _parts(spec: RunSpec) -> Iterator[tuple[str, Any]]:
    yield f"datasource '{getattr(spec.datasource, 'name', spec.datasource)}'", spec.datasource
    for step in spec.pipeline.steps:
        yield f"step '{step.name}'", step
    for key, value in spec.initial_ctx.items():
        yield f"context value '{key}'", value
    for plugin in spec.plugins:
        yield f"plugin {type(plugin).__name__}", plugin
    yield "seed function", spec.seeding.seed_fn


def find_unpicklable(spec: RunSpec) -> str | None:
    for label, part in _parts(spec):
        try:
            cloudpickle.dumps(part)
        except Exception:  # noqa: BLE001 - probing which part fails
            return label
    return None


def loads(blob: bytes) -> Any:
    return cloudpickle.loads(blob)
