"""``RayExecutor``: batches of replicates as Ray tasks, streamed back with ``ray.wait``.

The spec is ``ray.put`` once per run; each task carries a batch of
``(condition, replicate)`` pairs. Batches adapt to replicate duration (aiming at
``target_task_seconds`` per task), at most ``max_in_flight`` are outstanding, so
driver memory stays flat however many replicates there are. The in-flight limit and
batch sizes follow the cluster's CPUs, re-read about once a second, so nodes that join
mid-run get work; with an autoscaler the remaining work is shown to it (``capacity``).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from crystallize.engine.batching import AdaptiveBatcher
from crystallize.engine.plan import Conditions, ReplicateOutcome, ReplicateTask, RunSpec
from crystallize.engine.serialization import dumps_conditions, dumps_spec
from crystallize.errors import ExecutionError
from crystallize.execution.base import Executor
from crystallize.store.filesystem import Store

from . import capacity
from .connection import ensure_connected
from .errors import failed_batch, fatal_error
from .interrupts import InterruptGuard
from .worker import remote_run_batch
from .worker_logs import replay

logger = logging.getLogger(__name__)
RESIZE_SECONDS = 1.0  # how often a running map re-reads the cluster's resources


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
        max_cpus: float | None = None,
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
        self.max_cpus = max_cpus
        # One per run (made in start): an optimize trial's map starts from what earlier ones learned.
        self.batcher = AdaptiveBatcher(1, target_seconds=target_task_seconds, batch_size=batch_size)
        self.autoscaler: capacity.Autoscaler | None = None
        self.in_flight_limits: list[tuple[float, int]] = []  # (seconds into map, limit) each time it changed
        self.connected_as: str | None = None
        self._demand_key: str | None = None  # the running map's entry in capacity.DEMAND
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
        autoscaler = self.autoscaler
        can_add = autoscaler.can_fit(request) if autoscaler is not None else False
        if autoscaler is not None and can_add:
            logger.info("No node fits a replicate (%s) yet; %s, and a node that fits", request, autoscaler.describe())
            return
        if autoscaler is not None and can_add is None:
            logger.warning(
                "No node in the Ray cluster fits a replicate (%s) yet; replicates wait for %s to add one "
                "(if it never can, Ray reports them as infeasible and they wait for good).",
                request,
                autoscaler.describe(),
            )
            return
        where = f"; {autoscaler.describe()}, none of which fits" if autoscaler is not None else ""
        raise ExecutionError(
            f"No node in the Ray cluster can run a replicate that needs {request}; the largest node has "
            f"{shown}{where}. Lower num_cpus/num_gpus/memory/resources of RayExecution, or add nodes that "
            "have them (a cluster whose autoscaler can add such nodes passes this check; "
            "check_resources=False skips it if you add nodes by hand while the run waits)."
        )

    def parallelism(self) -> int:
        import ray

        present = ray.cluster_resources()  # re-read while a run goes: nodes join and leave
        cpus = present.get("CPU", 1.0)
        per_task = self.num_cpus or 1.0
        slots = int(cpus // per_task) if per_task else int(cpus)
        if self.num_gpus:
            slots = min(slots, int(present.get("GPU", 0.0) // self.num_gpus))
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
        # tail_share=1: a task costs a round trip (about a millisecond), so a short map (an optimize
        # trial) goes out as one batch per worker rather than two.
        self.batcher = AdaptiveBatcher(
            1, target_seconds=self.target_task_seconds, batch_size=self.batch_size, tail_share=1
        )
        blob = dumps_spec(spec)  # pickling problems surface here, before anything is submitted
        self.connected_as = ensure_connected(self.address, runtime_env=self.runtime_env, init_kwargs=self.init_kwargs)
        self.startup_seconds = time.perf_counter() - started
        self.autoscaler = capacity.find_autoscaler()
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
        if self._demand_key is not None:
            capacity.DEMAND.clear(self._demand_key)  # the autoscaler may scale down again
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a finished or lost task cannot be cancelled; nothing to do
                pass
        self._spec_ref = None
        broker, self._broker = getattr(self, "_broker", None), None
        if broker is not None:
            from .shared_cache import release_broker

            try:
                release_broker(broker, self._spec_id)  # the broker stays up for this driver's next run
            except Exception:  # noqa: BLE001 - already gone with its node
                pass

    def describe(self) -> dict[str, Any]:
        import ray

        info: dict[str, Any] = {"executor": self.name, "connected_as": self.connected_as}
        if ray.is_initialized():
            cpus = ray.cluster_resources().get("CPU")
            info.update(
                parallelism=self.parallelism(),
                nodes=self.node_count(),
                cpus=int(cpus) if cpus is not None and float(cpus).is_integer() else cpus,
            )
        info["startup_seconds"] = round(self.startup_seconds, 3)
        info["tasks"] = self.tasks_submitted
        info["in_flight_limits"] = [list(entry) for entry in self.in_flight_limits]
        if self.autoscaler is not None:
            info["autoscaler"] = self.autoscaler.describe()
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
        self.batcher = executor.batcher
        self.started = time.monotonic()
        self.demand_key = uuid.uuid4().hex
        executor.in_flight_limits = []
        self.workers = 1
        self.limit = 0
        self.resize()

    def resize(self) -> None:
        """Size in-flight work and batches to the cluster as it is now; show the autoscaler what is left.

        ``workers`` (batch sizing) counts the slots the autoscaler is adding for this run too,
        so early batches stay small enough to spread over the nodes about to join; the
        in-flight ``limit`` follows the slots present, so nodes that joined get work.
        """
        executor = self.executor
        self.next_resize = time.monotonic() + RESIZE_SECONDS
        try:
            present = executor.parallelism()
        except Exception as exc:  # mid-run, a failed read keeps the sizes there are
            if not self.limit:
                raise
            logger.debug("Could not re-read the cluster's resources: %s", exc)
            return
        self.workers = present
        autoscaler = executor.autoscaler
        if autoscaler is not None:
            request = executor._request()
            reachable = autoscaler.max_slots(request)
            remaining = len(self.queue) + len(self.singles) + sum(len(b) for b in self.pending.values())
            wanted = min(remaining, present + reachable if reachable is not None else capacity.MAX_DEMAND_BUNDLES)
            if executor.max_cpus is not None and executor.num_cpus:
                wanted = min(wanted, int(executor.max_cpus // executor.num_cpus))
            executor._demand_key = self.demand_key
            capacity.DEMAND.set(self.demand_key, request, wanted)
            if reachable is not None:
                self.workers = max(present, min(wanted, reachable))
        self.batcher.workers = max(1, self.workers)
        limit = executor.max_in_flight or max(4, present * 4)
        if limit != self.limit:
            self.limit = limit
            history = executor.in_flight_limits
            if len(history) < 100:
                history.append((round(time.monotonic() - self.started, 2), limit))

    def run(self, interrupt: InterruptGuard) -> Iterator[ReplicateOutcome]:
        try:
            yield from self._run(interrupt)
        finally:
            if self.executor.autoscaler is not None:
                capacity.DEMAND.clear(self.demand_key)  # the autoscaler may scale down again

    def _run(self, interrupt: InterruptGuard) -> Iterator[ReplicateOutcome]:
        import ray

        self.submit()
        while self.pending:
            # A timeout, so Ctrl-C is seen even while every task runs for minutes.
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            interrupt.check()
            if time.monotonic() >= self.next_resize:  # about once a second, however short the replicates
                self.resize()
                self.submit()
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
                size = self.batcher.next_size(len(self.queue))
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
            outcomes: list[ReplicateOutcome] = replay(ray.get(ref))  # the batch's log lines, on the driver now
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
        self.batcher.learn(o.seconds for o in outcomes if o.error is None or o.seconds)
        return outcomes


def spec_has_local_store(spec: RunSpec) -> bool:
    """Whether artifacts would go to a local folder (invisible to other nodes)."""
    return spec.data_uri is not None and Store(spec.data_uri).is_local
