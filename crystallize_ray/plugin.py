"""The ``RayExecution`` plugin: what a user puts in ``plugins=[...]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crystallize.execution.base import Executor
from crystallize.plugins.execution import ExecutionPlugin


@dataclass
class RayExecution(ExecutionPlugin):
    """Run replicates (and optimizer trials) as Ray tasks.

    ``address``: ``None`` starts (once per process) a private local Ray, or uses
    ``$RAY_ADDRESS``; ``"auto"`` or ``"ray://host:10001"`` joins a cluster; an already
    initialised Ray is used as it is. Per-replicate resources: ``num_cpus``,
    ``num_gpus``, ``memory`` (bytes), ``resources``; ``runtime_env`` ships your code
    and packages to a cluster's workers. Worker crashes and lost nodes are retried
    ``max_retries`` times; exceptions of the types in ``retry_exceptions`` are
    retried too, others are recorded at once. ``batch_size`` fixes how many
    replicates go in one task (default: adaptive, aiming at ~50 ms per task).

    In-flight work and batch sizes follow the CPUs the cluster has, re-read about once a
    second while a run goes, so nodes that join mid-run get work; ``max_in_flight`` fixes
    the number of tasks in flight instead. On a cluster with an autoscaler the remaining
    work is shown to it (``ray.autoscaler.sdk.request_resources``, one bundle of this
    replicate's resources per remaining replicate) and withdrawn when the run ends, so it
    scales up to what the run needs and back down after. ``max_cpus`` caps that demand
    (default: no cap of ours, so the autoscaler's own ``max_workers`` bound it). A head
    with no CPUs passes the resource check when the autoscaler can add nodes that fit.
    """

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None
    resources: Mapping[str, float] | None = None
    runtime_env: dict[str, Any] | None = None
    batch_size: int | None = None
    max_retries: int = 3
    retry_exceptions: Sequence[type[BaseException] | str] = field(default_factory=tuple)
    max_in_flight: int | None = None
    progress: bool | None = None
    init_kwargs: dict[str, Any] | None = None
    check_resources: bool = True
    max_cpus: float | None = None

    def prepare(self) -> None:
        """Connect to (or start) Ray now, on this thread; ``ray.init`` wants the main thread."""
        from .connection import ensure_connected

        ensure_connected(self.address, runtime_env=self.runtime_env, init_kwargs=self.init_kwargs)

    def create_executor(self) -> Executor:
        from .executor import RayExecutor

        return RayExecutor(
            address=self.address,
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            memory=self.memory,
            resources=self.resources,
            runtime_env=self.runtime_env,
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            retry_exceptions=self.retry_exceptions,
            max_in_flight=self.max_in_flight,
            init_kwargs=self.init_kwargs,
            check_resources=self.check_resources,
            max_cpus=self.max_cpus,
        )
