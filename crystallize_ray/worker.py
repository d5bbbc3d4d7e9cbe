"""Worker side: the one module-level remote function, and a per-process cache of run specs.

A task carries only a batch of ``(condition, replicate)`` pairs and two small ids;
the spec is fetched from the object store once per worker process and kept. What the batch
logs and prints comes back with its outcomes (see ``worker_logs``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from crystallize.engine.plan import ReplicateOutcome, ReplicateTask, RunSpec
from crystallize.engine.replicate import PreparedSpec, run_replicate
from crystallize.engine.serialization import loads

from .worker_logs import driver_level, run_captured

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from .shared_cache import CacheBroker

_SPECS: OrderedDict[str, PreparedSpec] = OrderedDict()
_CONDITIONS: OrderedDict[str, Any] = OrderedDict()
_KEEP = 4


def _cached(cache: OrderedDict[str, Any], key: str, box: Sequence[Any], build: Callable[[Any], Any]) -> Any:
    value = cache.get(key)
    if value is None:
        import ray

        value = build(loads(ray.get(box[0])))
        cache[key] = value
        while len(cache) > _KEEP:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


def _prepare(spec: RunSpec, broker: ActorHandle[CacheBroker] | None, run_id: str) -> PreparedSpec:
    prepared = PreparedSpec.of(spec)
    if broker is not None:
        from .shared_cache import SharedStepCache

        prepared.cache = SharedStepCache(prepared.cache, broker, namespace=run_id)
    return prepared


def _should_retry(outcome: ReplicateOutcome, retry_types: Sequence[str]) -> bool:
    return outcome.error is not None and any(t in retry_types for t in outcome.error.exception_types)


def run_batch(
    spec_id: str,
    spec_box: Sequence[Any],
    conditions_id: str,
    conditions_box: Sequence[Any],
    tasks: Sequence[tuple[str, int]],
    retry_types: Sequence[str] = (),
    retry_limit: int = 0,
    broker: ActorHandle[CacheBroker] | None = None,
    *,
    log_level: int | None = None,
) -> list[ReplicateOutcome]:
    """Run ``tasks`` in order; replicates failing with a listed exception type are retried here.

    With ``log_level``, records at or above it and what the batch prints come back with the outcomes.
    """
    return run_captured(
        log_level,
        lambda: _run_batch(spec_id, spec_box, conditions_id, conditions_box, tasks, retry_types, retry_limit, broker),
    )


def _run_batch(
    spec_id: str,
    spec_box: Sequence[Any],
    conditions_id: str,
    conditions_box: Sequence[Any],
    tasks: Sequence[tuple[str, int]],
    retry_types: Sequence[str],
    retry_limit: int,
    broker: ActorHandle[CacheBroker] | None,
) -> list[ReplicateOutcome]:
    prepared = _cached(_SPECS, spec_id, spec_box, lambda spec: _prepare(spec, broker, spec_id))
    conditions = _cached(_CONDITIONS, conditions_id, conditions_box, lambda value: value)
    outcomes = []
    for condition, replicate in tasks:
        task = ReplicateTask(condition, replicate)
        outcome = run_replicate(prepared, conditions, task)
        attempts = 1
        while attempts <= retry_limit and _should_retry(outcome, retry_types):
            outcome = run_replicate(prepared, conditions, task)
            attempts += 1
        if outcome.error is not None and attempts > 1:
            outcome.error = dataclasses.replace(outcome.error, attempts=attempts)
        outcomes.append(outcome)
    return outcomes


class _BatchFunction:
    """Ray's remote :func:`run_batch`; every call carries the driver's logging level.

    So the scheduler submits batches without knowing about logs: the level is read once per
    ``.options()`` (once per ``map``), and the records come back through ``worker_logs.replay``.
    """

    def __init__(self, function: Any, level: int | None = None) -> None:
        self._function = function
        self._level = level

    def options(self, **options: Any) -> _BatchFunction:
        return _BatchFunction(self._function.options(**options), driver_level())

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("log_level", self._level if self._level is not None else driver_level())
        return self._function.remote(*args, **kwargs)


_REMOTE: _BatchFunction | None = None


def remote_run_batch() -> _BatchFunction:
    """The remote version of :func:`run_batch`, made once per process; vary it with ``.options()``."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = _BatchFunction(ray.remote(run_batch))
    return _REMOTE
