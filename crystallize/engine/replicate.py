"""The one worker-side entry point: run one replicate of one condition.

Every executor (serial, thread, process, asyncio, Ray) ends up here, so a
replicate behaves the same wherever it runs. The replicate is written once, as a
generator that yields awaitables; a sync driver runs them on a private event loop,
an async driver awaits them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..awaitables import is_awaitable
from ..cache import (
    CacheBackend,
    CacheEntry,
    ReadSet,
    StepCache,
    cache_key,
    full_key,
    global_rng_digest,
    global_rng_state,
    restore_global_rng,
)
from ..constants import CONDITION_KEY, REPLICATE_KEY, SEED_USED_KEY
from ..context import FrozenContext
from ..errors import CacheError, step_failure
from ..seeding import seed_standard_generators
from ..store import signed_pickle
from ..tracebacks import format_exception
from . import gc_pacing, single_flight
from .plan import ArtifactEntry, Conditions, ErrorRecord, ReplicateOutcome, ReplicateTask, RunSpec, StepRecord

if TYPE_CHECKING:
    from ..plugins.base import BasePlugin
    from ..steps import PipelineStep
    from ..treatment import Treatment

logger = logging.getLogger(__name__)

NO_DATA: Any = object()
_HOOKS = ("before_replicate", "before_step", "after_step")


def unpack_step_output(output: Any) -> tuple[Any, Mapping[str, Any] | None]:
    """A step may return ``(data, {metric: value})``; anything else is just data."""
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], Mapping):
        return output[0], output[1]
    return output, None


@dataclass
class PreparedSpec:
    """A spec with what every replicate needs precomputed once per process."""

    spec: RunSpec
    cache: CacheBackend | None  # a StepCache, or anything with its lookup/save (and optional abandon) methods
    before_replicate: list[BasePlugin]
    before_step: list[BasePlugin]
    after_step: list[BasePlugin]
    datasource_stage: str = "datasource"
    step_names: tuple[str, ...] = ()
    cacheable: tuple[bool, ...] = ()  # per step: it goes through the cache when there is one
    # per treatment object: (initial values with the treatment's mapping applied, the treatment's keys)
    _condition_values: dict[int, tuple[Treatment | None, dict[str, Any], tuple[str, ...]]] = field(default_factory=dict)

    def condition_values(self, treatment: Treatment | None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A condition's starting values (initial_ctx, then a mapping treatment's) and its treatment keys;
        worked out once per treatment, as every replicate of the condition starts from the same values."""
        known = self._condition_values.get(id(treatment))
        if known is None or known[0] is not treatment:
            initial = dict(self.spec.initial_ctx)
            keys: tuple[str, ...] = ()
            if treatment is not None and treatment.is_mapping:
                applied = treatment.apply_map
                initial.update(applied)
                keys = tuple(applied)
            known = self._condition_values[id(treatment)] = (treatment, initial, keys)
        return known[1], known[2]

    @classmethod
    def of(cls, spec: RunSpec) -> PreparedSpec:
        from ..plugins.base import BasePlugin

        hooks: dict[str, list[BasePlugin]] = {name: [] for name in _HOOKS}
        for plugin in spec.plugins:
            for name in _HOOKS:
                if getattr(type(plugin), name, None) is not getattr(BasePlugin, name):
                    hooks[name].append(plugin)
        # The keys come with the spec: a worker never reads a key file or the environment for them.
        cache = StepCache(spec.cache_root, key=spec.cache_key) if spec.cache_root else None
        signed_pickle.use_key(spec.signing_key)
        stage = f"datasource:{getattr(spec.datasource, 'name', 'datasource')}"
        steps = spec.pipeline.steps
        return cls(
            step_names=tuple(step.name for step in steps),
            cacheable=tuple(bool(step.cacheable) for step in steps),  # the cache may come later (Ray's broker)
            spec=spec,
            cache=cache,
            before_replicate=hooks["before_replicate"],
            before_step=hooks["before_step"],
            after_step=hooks["after_step"],
            datasource_stage=stage,
        )


def replicate_program(
    prepared: PreparedSpec,
    conditions: Conditions,
    task: ReplicateTask,
    *,
    data: Any = NO_DATA,
    stop_after: int | None = None,
    raise_errors: bool = False,
    seed_override: int | None = None,
) -> Generator[Awaitable[Any], Any, tuple[ReplicateOutcome, Any]]:
    """Run one replicate; yields awaitables for async steps; returns (outcome, final data)."""
    spec = prepared.spec
    seed = seed_override if seed_override is not None else spec.seeding.seed_for(task.replicate)
    run = _Replicate(prepared, task, seed)
    try:
        ctx = run.open_context(conditions[task.condition])
        if data is NO_DATA:
            run.stage = prepared.datasource_stage
            data = spec.datasource.fetch(ctx)
            if is_awaitable(data):
                data = yield data
        steps, names, cacheable, cache = spec.pipeline.steps, prepared.step_names, prepared.cacheable, prepared.cache
        last = len(steps) - 1 if stop_after is None else stop_after
        # One loop, no sub-generator per step: this loop is most of a short replicate.
        for index in range(last + 1):
            step, name = steps[index], names[index]
            started = run.begin_step(index, step, name)
            fingerprint = _cache_fingerprint(spec, index, step) if cacheable[index] and cache is not None else None
            if cache is not None and fingerprint is not None:
                data, hit = yield from _run_cached(cache, step, fingerprint, index + 1, data, ctx)
            else:
                hit = False
                output = step(data, ctx)
                if is_awaitable(output):
                    output = yield output
                data, metrics = unpack_step_output(output)
                if metrics:
                    add = ctx.metrics.add
                    for metric, value in metrics.items():
                        add(metric, value)
            run.end_step(step, name, data, started, hit)
    except Exception as exc:
        if raise_errors:
            raise step_failure(  # also the step's own exception class, as 0.27's apply() raised it
                run.stage, exc, condition=task.condition, replicate=task.replicate, experiment=spec.name
            ) from exc
        return run.outcome(run.error_record(exc)), None
    return run.outcome(), data


class _Replicate:
    """The state of one replicate while it runs: its context, the stage it is in, its step records."""

    __slots__ = ("ctx", "prepared", "records", "seed", "spec", "stage", "started", "task", "treatment_keys")

    def __init__(self, prepared: PreparedSpec, task: ReplicateTask, seed: int | None) -> None:
        self.prepared = prepared
        self.spec = prepared.spec
        self.task = task
        self.seed = seed
        self.started = time.perf_counter()
        self.stage = "context"
        self.ctx: FrozenContext | None = None
        self.treatment_keys: tuple[str, ...] = ()
        self.records: list[StepRecord] = []

    def open_context(self, treatment: Treatment | None) -> FrozenContext:
        """The replicate's context (shared values copied on first read), treatment, seeds, first hooks."""
        spec, task, seed = self.spec, self.task, self.seed
        values, self.treatment_keys = self.prepared.condition_values(treatment)
        initial = dict(values)
        initial[REPLICATE_KEY] = task.replicate
        initial[CONDITION_KEY] = task.condition
        initial[SEED_USED_KEY] = seed
        ctx = self.ctx = FrozenContext._trusted(initial, shared=values, seed=seed)
        ctx._begin_stage(0)
        if treatment is not None and not treatment.is_mapping:
            self.stage = f"treatment:{treatment.name}"
            # Like a mapping treatment, a callable one overrides initial_ctx (once per key); nothing else.
            ctx._overridable = set(spec.initial_ctx)
            try:
                treatment.apply(ctx)
            finally:
                ctx._overridable = frozenset()
        self.stage = "seed"
        if seed is not None:
            (spec.seeding.seed_fn or seed_standard_generators)(seed)
        self.stage = "before_replicate"
        for plugin in self.prepared.before_replicate:
            plugin.before_replicate(spec, ctx)
        return ctx

    def begin_step(self, index: int, step: PipelineStep, name: str) -> float:
        """Enter step ``index``: its stage, its ``ctx.rng`` stream, the ``before_step`` hooks; its start time."""
        ctx = self.ctx
        assert ctx is not None, "open_context() first"
        self.stage = name
        ctx._begin_stage(index + 1)
        for plugin in self.prepared.before_step:
            plugin.before_step(self.spec, step)
        return time.perf_counter()

    def end_step(self, step: PipelineStep, name: str, data: Any, started: float, hit: bool) -> None:
        """Leave a step: its artifacts named after it, the ``after_step`` hooks, its record."""
        ctx = self.ctx
        assert ctx is not None, "open_context() first"
        if ctx.artifacts.records:
            for record in ctx.artifacts.unassigned():
                record.step_name = name
        for plugin in self.prepared.after_step:
            plugin.after_step(self.spec, step, data, ctx)
        self.records.append(StepRecord(name, time.perf_counter() - started, hit))

    def error_record(self, exc: Exception) -> ErrorRecord:
        spec, task = self.spec, self.task
        error = ErrorRecord(
            stage=self.stage,
            exception_type=type(exc).__name__,
            message=str(exc),
            traceback=format_exception(exc, spec.identities.origins if spec.identities else {}),
            condition=task.condition,
            replicate=task.replicate,
            exception_types=tuple(f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__),
            exception=exc,
        )
        logger.debug("replicate failed: %s", error)
        return error

    def outcome(self, error: ErrorRecord | None = None) -> ReplicateOutcome:
        ctx, task = self.ctx, self.task
        return ReplicateOutcome(
            task.condition,
            task.replicate,
            self.seed,
            ctx.metrics.snapshot() if ctx is not None else {},
            self.records,
            _manifest(ctx, self.spec.artifacts_via_driver) if ctx is not None and ctx.artifacts.records else [],
            error,
            time.perf_counter() - self.started,
            _treatment_reads(ctx, self.treatment_keys) if self.treatment_keys else (),
        )


def _treatment_reads(ctx: FrozenContext | None, keys: tuple[str, ...]) -> tuple[str, ...]:
    if ctx is None or not keys:
        return ()
    return tuple(key for key in keys if key in ctx._reads)


_UNHASHABLE_WARNED: set[str] = set()


def _cache_fingerprint(spec: RunSpec, index: int, step: PipelineStep) -> str | None:
    """The driver-made fingerprint of a cacheable step; None (run it uncached) when it has none."""
    if spec.identities is not None:
        fingerprint = spec.identities.cache_fingerprint(index)
    else:
        try:
            fingerprint = step.fingerprint
        except CacheError:
            fingerprint = None
    if fingerprint is None and step.name not in _UNHASHABLE_WARNED:
        _UNHASHABLE_WARNED.add(step.name)
        logger.warning(
            "step '%s' is cacheable but its parameters have no stable hash; running it without the cache.", step.name
        )
    return fingerprint


def _run_cached(
    cache: CacheBackend, step: PipelineStep, fingerprint: str, stage: int, data: Any, ctx: FrozenContext
) -> Generator[Awaitable[Any], Any, tuple[Any, bool]]:
    """Run a cacheable step through the cache: a hit replays exactly what the miss did."""
    try:
        base: str | None = cache_key(step, data, ctx, fingerprint)
    except CacheError as exc:
        logger.warning("%s; running it without the cache.", exc)
        base = None
    global_before = global_rng_digest()

    def resolve(reads: ReadSet) -> str | None:
        try:
            return full_key(base or "", reads, ctx, stage=stage, global_digest=global_before)
        except (CacheError, RecursionError) as exc:
            logger.debug("step '%s': a context value it read cannot be hashed (%s); a miss", step.name, exc)
            return None

    if base is None:
        return (yield from _compute_cached(cache, step, fingerprint, None, resolve, global_before, data, ctx)), False
    flight, scope = f"{fingerprint}/{base}", single_flight.scope_of(cache)
    while True:
        entry = cache.lookup(step, fingerprint, base, resolve)
        if entry is not None:
            return _replay(entry, ctx), True
        if single_flight.claim(scope, flight):
            break  # ours to compute; threads that miss the same key meanwhile wait for it
    try:
        data = yield from _compute_cached(cache, step, fingerprint, base, resolve, global_before, data, ctx)
    finally:
        single_flight.release(scope, flight)
    return data, False


def _compute_cached(
    cache: CacheBackend,
    step: PipelineStep,
    fingerprint: str,
    base: str | None,
    resolve: Callable[[ReadSet], str | None],
    global_before: str,
    data: Any,
    ctx: FrozenContext,
) -> Generator[Awaitable[Any], Any, Any]:
    """A miss: run the step, watching what it reads and adds, and save what it did under its full key."""
    watch = _MissWatch(ctx)
    try:
        output = step(data, ctx)
        if is_awaitable(output):
            output = yield output
    except BaseException:
        if base is not None and hasattr(cache, "abandon"):
            cache.abandon(step, fingerprint, base)  # replicates waiting on this result compute it themselves
        raise
    finally:
        watch.stop()
    data, metrics = unpack_step_output(output)
    for name, value in (metrics or {}).items():
        ctx.metrics.add(name, value)
    if base is None:
        return data
    reads = watch.read_set(drew_global=global_rng_digest() != global_before)
    key = resolve(reads)
    if key is None:
        if hasattr(cache, "abandon"):
            cache.abandon(step, fingerprint, base)
        return data
    try:
        cache.save(step, fingerprint, base, reads, key, watch.entry(data, reads))
    except Exception as exc:  # noqa: BLE001 - a cache write failure must not fail the replicate
        logger.warning("Could not write the cache entry of step '%s': %s", step.name, exc)
    return data


def _replay(entry: CacheEntry, ctx: FrozenContext) -> Any:
    """Make a hit look like the miss: its metrics, artifacts, added keys, reads and generator state."""
    for name, values in entry.metrics.items():
        for value in values:
            ctx.metrics.add(name, value)
    for name, blob in entry.artifacts:
        ctx.artifacts.add(name, blob)
    for key, value in entry.added.items():
        ctx.add(key, value)
    ctx._reads.update(entry.reads)  # what the step read counts as read, hit or miss
    if entry.rng_state is not None:
        restore_global_rng(entry.rng_state)
    return entry.data


class _MissWatch:
    """What a cacheable step does to the context while it runs: keys read and added, metrics, artifacts."""

    def __init__(self, ctx: FrozenContext) -> None:
        self.ctx = ctx
        self.metrics_before = {name: len(ctx.metrics[name]) for name in ctx.metrics}
        self.artifacts_before = len(ctx.artifacts)
        self.keys_before = set(ctx.keys())
        self.reads: set[str] = set()
        ctx._step_reads = set()

    def stop(self) -> None:
        self.reads, self.ctx._step_reads = self.ctx._step_reads or set(), None

    def added_keys(self) -> list[str]:
        return [key for key in self.ctx.keys() if key not in self.keys_before]

    def read_set(self, *, drew_global: bool) -> ReadSet:
        added = set(self.added_keys())
        keys = tuple(sorted(key for key in self.reads if key not in added))  # its own additions are derived
        return ReadSet(keys=keys, rng=self.ctx._rng_used, global_rng=drew_global)

    def entry(self, data: Any, reads: ReadSet) -> CacheEntry:
        ctx, before = self.ctx, self.metrics_before
        return CacheEntry(
            data=data,
            metrics={
                name: list(ctx.metrics[name][before.get(name, 0) :])
                for name in ctx.metrics
                if len(ctx.metrics[name]) > before.get(name, 0)
            },
            artifacts=[(r.name, r.data) for r in ctx.artifacts.records[self.artifacts_before :]],
            reads=list(reads.keys),
            rng=reads.rng,
            global_rng=reads.global_rng,
            added={key: ctx._data[key] for key in self.added_keys()},
            rng_state=global_rng_state() if reads.global_rng else None,
        )


def _manifest(ctx: FrozenContext | None, keep_bytes: bool = False) -> list[ArtifactEntry]:
    if ctx is None or not len(ctx.artifacts):
        return []
    return [
        ArtifactEntry(
            step=record.step_name or "",
            name=record.name,
            size=len(record.data),
            checksum=hashlib.sha256(record.data).hexdigest(),
            path=record.path,
            data=record.data if keep_bytes and record.path is None else None,
        )
        for record in ctx.artifacts
    ]


_LOOPS = threading.local()


def run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable to completion from sync code, on a per-thread private loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_LOOPS, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            _LOOPS.loop = loop
        return loop.run_until_complete(awaitable)
    # Called from inside a running loop (a notebook): finish it on a helper thread.
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(_as_coroutine(awaitable)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=target, name="crystallize-await")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def drive(program: Generator[Awaitable[Any], Any, Any]) -> Any:
    """Run a replicate program synchronously."""
    try:
        awaitable = next(program)
        while True:
            awaitable = program.send(run_awaitable(awaitable))
    except StopIteration as stop:
        return stop.value


async def drive_async(program: Generator[Awaitable[Any], Any, Any]) -> Any:
    """Run a replicate program inside an event loop, awaiting its async steps."""
    try:
        awaitable = next(program)
        while True:
            awaitable = program.send(await awaitable)
    except StopIteration as stop:
        return stop.value


def _global_rng_state() -> tuple[Any, Any]:
    import random

    import numpy as np

    return random.getstate(), np.random.get_state()


def _set_global_rng_state(state: tuple[Any, Any]) -> None:
    import random

    import numpy as np

    random.setstate(state[0])
    np.random.set_state(state[1])


class GlobalRNGTurns:
    """Whose ``random``/``numpy.random`` state the globals hold, among one event loop's replicates.

    Saving and restoring the two generators costs about 70 µs, so it is done only when a
    replicate resumes after *another* one ran: a replicate that runs to completion without
    being interleaved (every sync step, and async ones that do not overlap) costs nothing.
    The state the loop had before is put back by :meth:`finish`.
    """

    def __init__(self, *, fresh_needs_outer: bool = True) -> None:
        self.outer = _global_rng_state()
        self.holder: IsolatedGlobalRNG | None = None  # None: the globals hold the outer state (or a finished one's)
        self.holder_done = False
        # A replicate that starts fresh sees the outer state, unless it reseeds the globals first thing.
        self.fresh_needs_outer = fresh_needs_outer

    def take(self, replicate: IsolatedGlobalRNG) -> None:
        """``replicate`` resumes: give it its own state (saving the holder's) unless it already holds them."""
        holder = self.holder
        if holder is replicate:
            return
        if holder is not None and not self.holder_done:
            holder.state = _global_rng_state()
        if replicate.state is not None:
            _set_global_rng_state(replicate.state)
        elif self.fresh_needs_outer and holder is not None:
            _set_global_rng_state(self.outer)
        self.holder, self.holder_done = replicate, False

    def done(self, replicate: IsolatedGlobalRNG) -> None:
        if self.holder is replicate:
            self.holder_done = True  # nothing of it to save when the next one takes over

    def finish(self) -> None:
        """The loop's own state back, as it was before its replicates ran."""
        if self.holder is not None:
            _set_global_rng_state(self.outer)
            self.holder = None


class IsolatedGlobalRNG:
    """Awaitable wrapper: the coroutine sees its own ``random``/``numpy.random`` global state.

    Concurrent replicates on one event loop interleave at every ``await``; handing the two
    global generator states over whenever another replicate resumes (:class:`GlobalRNGTurns`)
    keeps every replicate's draws identical to a serial run.
    """

    def __init__(self, coroutine: Awaitable[Any], turns: GlobalRNGTurns | None = None) -> None:
        self.coroutine = coroutine
        self.turns = turns or GlobalRNGTurns()
        self.owns_turns = turns is None
        self.state: tuple[Any, Any] | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        iterator = self.coroutine.__await__()
        turns = self.turns
        send_value: Any = None
        error: BaseException | None = None
        try:
            while True:
                turns.take(self)
                try:
                    if error is not None:
                        yielded = iterator.throw(error)
                    else:
                        yielded = iterator.send(send_value)
                except StopIteration as stop:
                    return stop.value
                try:
                    send_value, error = (yield yielded), None
                except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine
                    send_value, error = None, exc
        finally:
            turns.done(self)
            if self.owns_turns:
                turns.finish()


def run_replicate(prepared: PreparedSpec, conditions: Conditions, task: ReplicateTask) -> ReplicateOutcome:
    outcome, _ = drive(replicate_program(prepared, conditions, task))
    return outcome


def run_tasks(prepared: PreparedSpec, conditions: Conditions, tasks: Sequence[ReplicateTask]) -> list[ReplicateOutcome]:
    """Run a batch of tasks in order; the unit executors ship to a worker."""
    with gc_pacing.relaxed():
        return [run_replicate(prepared, conditions, ReplicateTask(*task)) for task in tasks]
