"""Execution plugins: choose where replicates run. The last one given wins."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..engine.plan import Conditions, ReplicateOutcome, ReplicateTask, RunSpec
from ..engine.replicate import PreparedSpec, run_awaitable, run_replicate
from ..errors import ValidationError
from ..execution.base import Executor
from ..execution.local import AsyncExecutor, ProcessExecutor, SerialExecutor, ThreadExecutor
from .base import BasePlugin

VALID_EXECUTOR_TYPES = ("thread", "process")


class ExecutionPlugin(BasePlugin):
    """A plugin that supplies the executor; ``progress`` (None: on when stderr is a terminal).

    What the executor can do (``concurrent_runs``, ``shares_driver_filesystem``) is asked of
    the executor itself (:class:`~crystallize.execution.base.Executor`).
    """

    progress: bool | None = None

    def create_executor(self) -> Executor:
        raise NotImplementedError

    @property
    def concurrent_runs(self) -> bool:
        """Deprecated: ``create_executor().concurrent_runs``; kept so code reading it keeps working."""
        warnings.warn(
            "ExecutionPlugin.concurrent_runs is deprecated; read Executor.concurrent_runs "
            "(plugin.create_executor().concurrent_runs)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.create_executor().concurrent_runs

    def prepare(self) -> None:
        """Acquire what must be set up on the main thread (Ray connects here) before runs start."""


@dataclass
class SerialExecution(ExecutionPlugin):
    """Replicates one after another in this process (the default)."""

    progress: bool | None = None

    def create_executor(self) -> Executor:
        return SerialExecutor()


@dataclass
class ParallelExecution(ExecutionPlugin):
    """Replicates on a pool of threads (``executor_type="thread"``) or processes (``"process"``)."""

    max_workers: int | None = None
    executor_type: str = "thread"
    progress: bool | None = None
    batch_size: int | None = None
    mp_context: str | None = None

    def __post_init__(self) -> None:
        if self.executor_type not in VALID_EXECUTOR_TYPES:
            raise ValidationError(f"executor_type must be one of {VALID_EXECUTOR_TYPES}, got {self.executor_type!r}")
        if self.max_workers is not None and self.max_workers < 1:
            raise ValidationError("max_workers must be at least 1")

    def create_executor(self) -> Executor:
        if self.executor_type == "process":
            return ProcessExecutor(self.max_workers, self.batch_size, self.mp_context)
        return ThreadExecutor(self.max_workers, self.batch_size)


@dataclass
class AsyncExecution(ExecutionPlugin):
    """Replicates as coroutines on one event loop; for pipelines with ``async def`` steps."""

    progress: bool | None = None
    max_concurrency: int | None = None

    def create_executor(self) -> Executor:
        return AsyncExecutor(self.max_concurrency)


def overrides_loop(plugin: BasePlugin) -> bool:
    return type(plugin).run_experiment_loop is not BasePlugin.run_experiment_loop


class LegacyLoopExecutor(Executor):
    """Runs a plugin written against upstream's ``run_experiment_loop(experiment, replicate_fn)``.

    ``replicate_fn(i)`` runs every condition of the i-th replicate in this process
    and returns their outcomes; the plugin decides how to schedule the calls.
    """

    name = "legacy-loop"

    def __init__(self, plugin: BasePlugin) -> None:
        self.plugin = plugin
        self.name = f"legacy:{type(plugin).__name__}"

    def start(self, spec: RunSpec) -> RunSpec:
        self.prepared = PreparedSpec.of(spec)
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        by_replicate: dict[int, list[ReplicateTask]] = {}
        for task in tasks:
            by_replicate.setdefault(task.replicate, []).append(task)
        order = sorted(by_replicate)

        def replicate_fn(index: int) -> list[ReplicateOutcome]:
            return [run_replicate(self.prepared, conditions, t) for t in by_replicate[order[index]]]

        view = SimpleNamespace(
            name=self.prepared.spec.name,
            id=self.prepared.spec.name,
            replicates=len(order),
            pipeline=self.prepared.spec.pipeline,
            datasource=self.prepared.spec.datasource,
        )
        returned: Any = self.plugin.run_experiment_loop(view, replicate_fn)
        if inspect.isawaitable(returned):
            returned = run_awaitable(returned)
        for group in returned or []:
            if isinstance(group, ReplicateOutcome):
                yield group
            else:
                yield from group
