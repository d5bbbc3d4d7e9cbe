"""``RayExecutor``: batches of replicates as Ray tasks, streamed back with ``ray.wait``.

The spec is ``ray.put`` once per run; each task carries a batch of
``(condition, replicate)`` pairs. Batches adapt to replicate duration (aiming at
``target_task_seconds`` per task), at most ``max_in_flight`` are outstanding, so
driver memory stays flat however many replicates there are.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from crystallize.engine.batching import batch_size_for
from crystallize.engine.plan import Conditions, ReplicateOutcome, ReplicateTask, RunSpec
from crystallize.engine.serialization import dumps_conditions, dumps_spec
from crystallize.errors import ExecutionError
from crystallize.execution.base import Executor
from crystallize.store.filesystem import Store

from .connection import ensure_connected
from .errors import failed_batch, fatal_error
from .interrupts import InterruptGuard
from .worker import remote_run_batch

logger = logging.getLogger(__name__)


class RayExecutor(Executor):
    name = "ray"
    concurrent_runs = True  # independent experiments of a graph can share the cluster

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        memory: int | None = None,
        resources: Mapping[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
        batch_size: int | None = None,
        max_retries: int = 3,
        retry_exceptions: Sequence[type[BaseException] | str] = (),
        max_in_flight: int | None = None,
        target_task_seconds: float = 0.05,
        init_kwargs: dict[str, Any] | None = None,
        check_resources: bool = True,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.memory = memory
        self.resources = dict(resources or {})
        self.runtime_env = runtime_env
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.retry_types = tuple(
            t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in retry_exceptions
        )
        self.max_in_flight = max_in_flight
        self.target_task_seconds = target_task_seconds
        self.init_kwargs = init_kwargs
        self.check_resources = check_resources
        self.connected_as: str | None = None
        self._spec_ref: Any = None
        self._spec_id: str = ""
        self._pending: dict[Any, list[tuple[str, int]]] = {}
        self._broker: Any = None
        self.startup_seconds = 0.0
        self.tasks_submitted = 0

    # -- set-up ---------------------------------------------------------------------------
    def _request(self) -> dict[str, float]:
        request = {"CPU": float(self.num_cpus), "GPU": float(self.num_gpus), **self.resources}
        if self.memory:
            request["memory"] = float(self.memory)
        return {k: v for k, v in request.items() if v}

    def _check_feasible(self) -> None:
        import ray

        request = self._request()
        nodes: list[dict[str, float]] = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(all(node.get(k, 0.0) >= v for k, v in request.items()) for node in nodes):
            return
        biggest: dict[str, float] = max(nodes, key=lambda n: n.get("CPU", 0.0), default={})
        shown = {k: v for k, v in biggest.items() if not k.startswith("node:") and "object_store" not in k}
        raise ExecutionError(
            f"No node in the Ray cluster can run a replicate that needs {request}; the largest node has "
            f"{shown}. Lower num_cpus/num_gpus/memory/resources of RayExecution, or add nodes "
            "(pass check_resources=False if an autoscaler will add them)."
        )

    def parallelism(self) -> int:
        import ray

        cpus = ray.cluster_resources().get("CPU", 1.0)
        per_task = self.num_cpus or 1.0
        slots = int(cpus // per_task) if per_task else int(cpus)
        if self.num_gpus:
            slots = min(slots, int(ray.cluster_resources().get("GPU", 0.0) // self.num_gpus))
        return max(1, slots)

    def node_count(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n.get("Alive"))

    @property
    def shares_driver_filesystem(self) -> bool:
        """Only a one-node Ray runs its workers beside the driver; False until Ray is connected."""
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized() and self.node_count() <= 1

    def start(self, spec: RunSpec) -> RunSpec:
        """Connect, check resources and ship the spec; on several nodes a local store's artifacts go via the driver."""
        import ray

        started = time.perf_counter()
        blob = dumps_spec(spec)  # pickling problems surface here, before anything is submitted
        self.connected_as = ensure_connected(self.address, runtime_env=self.runtime_env, init_kwargs=self.init_kwargs)
        self.startup_seconds = time.perf_counter() - started
        if self.check_resources:
            self._check_feasible()
        if not self.shares_driver_filesystem and spec_has_local_store(spec):
            spec = replace(spec, artifacts_via_driver=True, cache_root=None)
            logger.info(
                "The data store is a local folder and the cluster has %d nodes: artifacts travel back to the "
                "driver through the object store and the driver writes them; cacheable step results are shared "
                "within the run through the object store but not persisted (use a shared store such as "
                "s3://... for both).",
                self.node_count(),
            )
            blob = dumps_spec(spec)
        self._broker = None
        if any(getattr(step, "cacheable", False) for step in spec.pipeline.steps):
            from .shared_cache import start_broker

            self._broker = start_broker()
        self._spec_ref = ray.put(blob)
        self._spec_id = uuid.uuid4().hex
        return spec

    def stop(self) -> None:
        import ray

        pending, self._pending = self._pending, {}
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a finished or lost task cannot be cancelled; nothing to do
                pass
        self._spec_ref = None
        broker, self._broker = getattr(self, "_broker", None), None
        if broker is not None:
            try:
                ray.kill(broker)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass

    def describe(self) -> dict[str, Any]:
        import ray

        info: dict[str, Any] = {"executor": self.name, "connected_as": self.connected_as}
        if ray.is_initialized():
            info.update(parallelism=self.parallelism(), nodes=self.node_count())
        info["startup_seconds"] = round(self.startup_seconds, 3)
        info["tasks"] = self.tasks_submitted
        return info

    # -- running ---------------------------------------------------------------------------
    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        import ray

        if self._spec_ref is None:
            raise ExecutionError("RayExecutor.map() before start()")
        remote = remote_run_batch().options(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            memory=self.memory,
            resources=self.resources or None,
            max_retries=self.max_retries,
            retry_exceptions=False,
            # Ray was up before us: ray.init never saw runtime_env, so it goes on the tasks.
            **({"runtime_env": self.runtime_env} if self.runtime_env and self.connected_as == "existing" else {}),
        )
        scheduler = _Scheduler(self, remote, ray.put(dumps_conditions(conditions)), tasks)
        self._pending = scheduler.pending  # stop() cancels what is still out
        with InterruptGuard() as interrupt:
            yield from scheduler.run(interrupt)


class _Scheduler:
    """One ``map``: batches out, at most ``limit`` in flight, outcomes back in completion order.

    Batch sizes adapt to how long replicates take (aiming at the executor's
    ``target_task_seconds`` per task). A batch that fails in Ray is split into single
    replicates, so only the one that brings its worker down is recorded as failed.
    """

    def __init__(self, executor: RayExecutor, remote: Any, conditions_ref: Any, tasks: Sequence[ReplicateTask]) -> None:
        self.executor = executor
        self.remote = remote
        self.conditions_ref = conditions_ref
        self.conditions_id = uuid.uuid4().hex
        self.queue: deque[tuple[str, int]] = deque((t.condition, t.replicate) for t in tasks)
        self.total = len(self.queue)
        self.singles: list[tuple[str, int]] = []
        self.pending: dict[Any, list[tuple[str, int]]] = {}
        self.workers = executor.parallelism()
        self.limit = executor.max_in_flight or max(4, self.workers * 4)
        self.seconds_per_replicate: float | None = None

    def run(self, interrupt: InterruptGuard) -> Iterator[ReplicateOutcome]:
        import ray

        self.submit()
        while self.pending:
            # A timeout, so Ctrl-C is seen even while every task runs for minutes.
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            interrupt.check()
            for ref in ready:
                outcomes = self.collect(ref, self.pending.pop(ref))
                self.submit()
                yield from outcomes
        interrupt.check()

    def submit(self) -> None:
        executor = self.executor
        while (self.queue or self.singles) and len(self.pending) < self.limit:
            if self.singles:
                batch = [self.singles.pop()]
            else:
                size = self.next_batch_size()
                batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
            executor.tasks_submitted += 1
            ref = self.remote.remote(
                executor._spec_id,
                [executor._spec_ref],
                self.conditions_id,
                [self.conditions_ref],
                batch,
                executor.retry_types,
                executor.max_retries if executor.retry_types else 0,
                executor._broker,
            )
            self.pending[ref] = batch

    def collect(self, ref: Any, batch: list[tuple[str, int]]) -> list[ReplicateOutcome]:
        """The batch's outcomes; a failed batch is split, or becomes error records when it is one replicate."""
        import ray

        try:
            outcomes: list[ReplicateOutcome] = ray.get(ref)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            fatal = fatal_error(exc)
            if fatal is not None:
                raise fatal from exc
            if len(batch) > 1:
                logger.warning(
                    "A batch of %d replicate(s) failed in Ray (%s); retrying them one by one",
                    len(batch),
                    type(exc).__name__,
                )
                self.singles.extend(batch)
                return []
            logger.warning("Replicate %s failed in Ray after retries: %s", batch[0], exc)
            outcomes = failed_batch(batch, exc, self.executor.max_retries + 1)
        self.learn(outcomes)
        return outcomes

    def next_batch_size(self) -> int:
        if self.executor.batch_size:
            return self.executor.batch_size
        if self.seconds_per_replicate is None:
            return batch_size_for(self.total, self.workers, per_worker=8, cap=64)
        ideal = self.executor.target_task_seconds / max(self.seconds_per_replicate, 1e-7)
        tail = math.ceil(len(self.queue) / (self.workers * 2))
        return max(1, min(int(ideal), 4096, tail))

    def learn(self, outcomes: Sequence[ReplicateOutcome]) -> None:
        if not outcomes:
            return
        mean = sum(o.seconds for o in outcomes) / len(outcomes)
        previous = self.seconds_per_replicate
        self.seconds_per_replicate = mean if previous is None else 0.7 * previous + 0.3 * mean


def spec_has_local_store(spec: RunSpec) -> bool:
    """Whether artifacts would go to a local folder (invisible to other nodes)."""
    return spec.data_uri is not None and Store(spec.data_uri).is_local
