"""A pipeline run on its own (``Pipeline.run`` / ``arun``): one pass over the steps in this process.

No experiment, no store, no replicates: the caller gives the data and the context. Cacheable
steps go through the same cached-step path as a replicate (``replicate._run_cached``), so a
result cached here is one an experiment can reuse and the other way round. Each step leaves a
provenance record: its fingerprint, hashes of its input and output, whether the cache served
it, and what it did to the context (keys read with their values, keys written, metrics added).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..awaitables import is_awaitable
from ..cache import StepCache
from ..constants import SEED_USED_KEY
from ..context import FrozenContext
from ..errors import ParameterError, PipelineExecutionError
from ..hashing import stable_hash
from ..store import layout
from ..store.locations import cache_disabled, cache_location
from .identity import step_identity
from .replicate import _run_cached, unpack_step_output

if TYPE_CHECKING:
    from ..steps import PipelineStep

logger = logging.getLogger(__name__)

Provenance = dict[str, Any]

_UNCACHED_WARNED: set[str] = set()


def standalone_program(
    steps: Sequence[PipelineStep],
    data: Any,
    ctx: FrozenContext,
    *,
    verbose: bool = False,
    progress: bool = False,
    rep: int | None = None,
    condition: str | None = None,
    log: logging.Logger | None = None,
    experiment: Any = None,
    records: list[Provenance],
) -> Generator[Awaitable[Any], Any, Any]:
    """Run ``steps`` on ``data`` with ``ctx``; yields the awaitables of async steps, returns the output.

    ``records`` receives one provenance record per finished step as it finishes (a step that
    raises leaves the records of the steps before it). A step's exception is raised as a
    :class:`PipelineExecutionError` naming it.
    """
    if not isinstance(ctx, FrozenContext):
        raise ParameterError(f"Pipeline.run() needs a FrozenContext as ctx, got {type(ctx).__name__}")
    log = log or logging.getLogger("crystallize")
    cache = _cache_for(steps)
    before_hooks, after_hooks = _hooks(experiment)
    if ctx._rng_seed is None:
        # What ctx.rng would draw from anyway; pinned so a cache key that covers ctx.rng sees it.
        ctx._rng_seed = int(ctx._data.get(SEED_USED_KEY) or 0)
    tracker = _ReadTracker(ctx)
    bar = _progress_bar(len(steps)) if progress and len(steps) > 1 else None
    input_hash = _data_hash(data)
    try:
        for index, step in enumerate(steps):
            ctx._begin_stage(index + 1)  # the stream a replicate's step draws ctx.rng from
            keys_before = set(ctx._data)
            metrics_before = {name: ctx.metrics[name] for name in ctx.metrics}
            for plugin in before_hooks:
                plugin.before_step(experiment, step)
            tracker.start()
            try:
                data, hit = yield from _run_step(cache, index, step, data, ctx)
            except Exception as exc:
                raise PipelineExecutionError(step.name, exc, condition=condition, replicate=rep) from exc
            finally:
                reads = tracker.stop()
            for record in ctx.artifacts.unassigned():
                record.step_name = step.name
            for plugin in after_hooks:
                plugin.after_step(experiment, step, data, ctx)
            output_hash = _data_hash(data)
            records.append(
                _record(step, ctx, input_hash, output_hash, hit, reads, keys_before, metrics_before),
            )
            if verbose:
                for key, value in records[-1]["ctx_changes"]["reads"].items():
                    log.debug("Read %s -> %s", key, value)
            input_hash = output_hash
            if bar is not None:
                bar.update(1)
    finally:
        tracker.close()
        if bar is not None:
            bar.close()
    hits = sum(1 for record in records if record["cache_hit"])
    log.info("Cache hit rate: %.0f%% (%d/%d steps)", 100.0 * hits / (len(steps) or 1), hits, len(steps))
    return data


def _run_step(
    cache: StepCache | None, index: int, step: PipelineStep, data: Any, ctx: FrozenContext
) -> Generator[Awaitable[Any], Any, tuple[Any, bool]]:
    """One step, through the replicate's cached-step path when it is cacheable; ``(data, cache hit)``."""
    fingerprint = _cache_fingerprint(step) if cache is not None and step.cacheable else None
    if cache is not None and fingerprint is not None:
        return (yield from _run_cached(cache, step, fingerprint, index + 1, data, ctx))
    output = step(data, ctx)
    if is_awaitable(output):
        output = yield output
    data, metrics = unpack_step_output(output)
    for name, value in (metrics or {}).items():
        ctx.metrics.add(name, value)
    return data, False


def _cache_for(steps: Sequence[PipelineStep]) -> StepCache | None:
    """The step cache an experiment run here would use (None when no step is cacheable or it is off)."""
    if cache_disabled() or not any(getattr(step, "cacheable", False) for step in steps):
        return None
    return StepCache(cache_location())


def _cache_fingerprint(step: PipelineStep) -> str | None:
    """The step's fingerprint, as an experiment's driver makes it; None when its parameters have no stable hash."""
    fingerprint, exact = step_identity(step)
    if exact:
        return fingerprint
    if step.name not in _UNCACHED_WARNED:
        _UNCACHED_WARNED.add(step.name)
        logger.warning(
            "step '%s' is cacheable but its parameters have no stable hash; running it without the cache.", step.name
        )
    return None


def _hooks(experiment: Any) -> tuple[list[Any], list[Any]]:
    """The experiment's plugins that override ``before_step`` / ``after_step``."""
    if experiment is None:
        return [], []
    from ..plugins.base import BasePlugin

    plugins = list(getattr(experiment, "plugins", ()) or ())

    def overriding(hook: str) -> list[Any]:
        default = getattr(BasePlugin, hook)
        return [p for p in plugins if callable(getattr(p, hook, None)) and getattr(type(p), hook, None) is not default]

    return overriding("before_step"), overriding("after_step")


def _data_hash(data: Any) -> str | None:
    """A stable digest of step data for provenance; None for data that has no stable hash."""
    try:
        return stable_hash(data)
    except Exception:  # noqa: BLE001 - an object's reduction may raise anything; provenance just lacks it
        return None


def _step_hash(step: PipelineStep) -> str | None:
    try:
        return step_identity(step)[0]
    except Exception:  # noqa: BLE001 - provenance must not fail a run that succeeded
        return None


def legacy_step_name(step: PipelineStep) -> str:
    """The name earlier releases gave a step in provenance: its class name, ``<Function>Step`` for decorated ones."""
    fn = getattr(step, "fn", None)
    name = getattr(fn, "__name__", None)
    if fn is not None and isinstance(name, str):
        return layout.legacy_step_folder(name)  # the same rule names their artifact folders
    return type(step).__name__


def _record(
    step: PipelineStep,
    ctx: FrozenContext,
    input_hash: str | None,
    output_hash: str | None,
    hit: bool,
    reads: set[str],
    keys_before: set[str],
    metrics_before: dict[str, tuple[Any, ...]],
) -> Provenance:
    values = ctx._data  # never through ctx[...]: provenance must not count as the step reading
    metrics: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name in ctx.metrics:
        after, before = ctx.metrics[name], metrics_before.get(name, ())
        if after != before:
            metrics[name] = {"before": before, "after": after}
    return {
        "step": legacy_step_name(step),
        "params": dict(step.params),
        "step_hash": _step_hash(step),
        "input_hash": input_hash,
        "output_hash": output_hash,
        "cache_hit": hit,
        "ctx_changes": {
            "reads": {key: values[key] for key in sorted(reads) if key in values},
            "wrote": {key: {"before": None, "after": values[key]} for key in values if key not in keys_before},
            "metrics": metrics,
        },
    }


class _RecordingReads(set):  # type: ignore[type-arg]
    """``ctx._reads`` while a standalone run lasts: every key the context marks as read also lands in ``step``."""

    def __init__(self, items: set[str]) -> None:
        super().__init__(items)
        self.step: set[str] | None = None

    def add(self, key: str) -> None:
        if self.step is not None:
            self.step.add(key)
        super().add(key)

    def update(self, *others: Any) -> None:
        for other in others:
            for key in other:
                self.add(key)


class _ReadTracker:
    """Which context keys each step read, including the reads a cache hit replays."""

    def __init__(self, ctx: FrozenContext) -> None:
        self.ctx = ctx
        self.reads = _RecordingReads(set(ctx._reads))
        ctx._reads = self.reads

    def start(self) -> None:
        self.reads.step = set()

    def stop(self) -> set[str]:
        step, self.reads.step = self.reads.step or set(), None
        return step

    def close(self) -> None:
        self.ctx._reads = set(self.reads)


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Steps", unit="step", leave=False, file=sys.stderr)
