"""In-process and multi-process executors: serial, thread, process and asyncio."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..cli_hints import hint
from ..engine.batching import AdaptiveBatcher
from ..engine.plan import Conditions, ErrorRecord, ReplicateOutcome, ReplicateTask, RunSpec
from ..engine.replicate import (
    GlobalRNGTurns,
    IsolatedGlobalRNG,
    PreparedSpec,
    drive_async,
    replicate_program,
    run_replicate,
    run_tasks,
)
from ..engine.serialization import dumps_conditions, dumps_spec, loads
from ..errors import ExecutionError
from .base import Executor

logger = logging.getLogger(__name__)


class SerialExecutor(Executor):
    """One replicate after another in this process; the reference behaviour."""

    name = "serial"

    def start(self, spec: RunSpec) -> RunSpec:
        self.prepared = PreparedSpec.of(spec)
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        for task in tasks:
            yield run_replicate(self.prepared, conditions, task)


_ASYNC_QUEUE = 4096  # finished outcomes of the async executor waiting for the driver
_IN_FLIGHT_PER_WORKER = 2  # one batch running, one queued behind it: workers never wait on the driver


class _Stream:
    """One ``map`` on a pool: time-sized batches out lazily, at most ``limit`` in flight.

    Tasks are cut into batches only when there is room to submit one, so an interrupt or
    a dead worker loses at most the batches in flight, each about the batcher's target
    of work. Replicates put back with :meth:`retry_alone` run one at a time, alone on
    the pool, so a worker death among them names its replicate.
    """

    def __init__(self, tasks: Sequence[ReplicateTask], batcher: AdaptiveBatcher, limit: int) -> None:
        self.tasks = tasks
        self.position = 0
        self.batcher = batcher
        self.limit = max(1, limit)
        self.pending: dict[cf.Future[list[ReplicateOutcome]], list[ReplicateTask]] = {}
        self.suspects: collections.deque[ReplicateTask] = collections.deque()
        self.alone: ReplicateTask | None = None  # the suspect running by itself, if any

    def fill(self, submit: Callable[[list[ReplicateTask]], cf.Future[list[ReplicateOutcome]]]) -> None:
        if self.suspects:
            if not self.pending:
                future = submit([self.suspects[0]])  # taken off the queue once submitted, never lost
                self.alone = self.suspects.popleft()
                self.pending[future] = [self.alone]
            return
        tasks, total = self.tasks, len(self.tasks)
        while self.position < total and len(self.pending) < self.limit:
            size = self.batcher.next_size(total - self.position)
            chunk = list(tasks[self.position : self.position + size])
            future = submit(chunk)
            self.position += size
            self.pending[future] = chunk

    def outcomes(
        self, submit: Callable[[list[ReplicateTask]], cf.Future[list[ReplicateOutcome]]]
    ) -> Iterator[ReplicateOutcome]:
        """Outcomes in completion order until every task is done; a future's error is raised as is."""
        while True:
            # Submitting only here, with no outcomes in hand, so a pool that breaks on submit loses
            # nothing already finished; each worker still has a batch queued while the driver folds.
            self.fill(submit)
            if not self.pending:
                return
            done, _ = cf.wait(self.pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                outcomes = future.result()
                del self.pending[future]
                self.alone = None
                self.batcher.learn([o.seconds for o in outcomes])
                yield from outcomes

    def retry_alone(self) -> Iterator[ReplicateOutcome]:
        """After the pool broke: outcomes that had arrived are yielded; the lost tasks become suspects.

        A suspect that was running alone is not put back: it is the culprit (see ``alone``).
        """
        lost: list[ReplicateTask] = []
        for future, chunk in self.pending.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                yield from future.result()
            elif chunk != [self.alone]:
                lost.extend(chunk)
        self.pending.clear()
        self.suspects.extendleft(reversed(lost))

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


class ThreadExecutor(Executor):
    """A thread pool in this process. Good for I/O-bound steps; the GIL limits CPU-bound ones.

    Threads share ``random``/``numpy.random`` global state, so with more than one
    worker, code that draws from those global generators is not reproducible.
    """

    name = "thread"

    def __init__(self, max_workers: int | None = None, batch_size: int | None = None) -> None:
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self.batch_size = batch_size
        self.batcher: AdaptiveBatcher | None = None  # the run's, shared by its maps; kept for its sizes
        self._pool: cf.ThreadPoolExecutor | None = None

    def parallelism(self) -> int:
        return self.max_workers

    def shares_global_rng(self) -> bool:
        return self.max_workers > 1

    def start(self, spec: RunSpec) -> RunSpec:
        self.prepared = PreparedSpec.of(spec)
        self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="crystallize")
        self.batcher = None  # a new run learns afresh; its maps (optimize trials) share what they learn
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        assert self._pool is not None, "start() first"
        pool = self._pool
        if self.batcher is None:
            self.batcher = AdaptiveBatcher(self.max_workers, batch_size=self.batch_size)
        stream = _Stream(tasks, self.batcher, self.max_workers * _IN_FLIGHT_PER_WORKER)
        try:
            yield from stream.outcomes(lambda chunk: pool.submit(run_tasks, self.prepared, conditions, chunk))
        finally:
            stream.cancel()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_WORKER_SPEC: PreparedSpec | None = None
_WORKER_SPEC_ERROR = ""  # why the spec could not be loaded in this worker, if it could not
_WORKER_CONDITIONS: tuple[bytes, Conditions] | None = None


_PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent: int) -> None:
    """A worker's watchdog: once its parent is gone (the driver was killed), end the process at once."""
    while True:
        time.sleep(_PARENT_POLL_SECONDS)
        if os.getppid() != parent:
            os._exit(70)  # no cleanup: the driver that wanted the results is gone


def _init_process(spec_blob: bytes) -> None:
    global _WORKER_SPEC, _WORKER_SPEC_ERROR
    # Workers die with their driver: without this, a SIGKILLed driver leaves them running
    # the replicates already queued to them, and then waiting on the queue for minutes.
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="crystallize-watchdog", daemon=True).start()
    try:
        _WORKER_SPEC = PreparedSpec.of(loads(spec_blob))
    except Exception as exc:  # noqa: BLE001 - reported by every task, not as a dead worker
        # An initializer that raises kills the worker, which would look like a replicate that crashed it.
        _WORKER_SPEC_ERROR = f"{type(exc).__name__}: {exc}"


def _run_in_process(conditions_blob: bytes, tasks: list[ReplicateTask]) -> list[ReplicateOutcome]:
    global _WORKER_CONDITIONS
    if _WORKER_SPEC is None:
        raise ExecutionError(f"a worker process could not load the run spec: {_WORKER_SPEC_ERROR or 'not initialised'}")
    if _WORKER_CONDITIONS is None or _WORKER_CONDITIONS[0] != conditions_blob:
        _WORKER_CONDITIONS = (conditions_blob, loads(conditions_blob))
    return run_tasks(_WORKER_SPEC, _WORKER_CONDITIONS[1], tasks)


_MAX_CRASHED_REPLICATES = 10  # beyond this many, the run stops rather than restart pools forever


def _worker_died(task: ReplicateTask) -> ReplicateOutcome:
    """The error record of a replicate whose worker process died under it, alone, twice."""
    serial = hint("SerialExecution", "--executor serial")
    message = (
        "its worker process died while running it, twice (out of memory, a crash in native code, or "
        f"os._exit); run it with {serial} to see the error in-process"
    )
    return ReplicateOutcome(
        condition=task.condition,
        replicate=task.replicate,
        seed=None,
        metrics={},
        error=ErrorRecord(
            stage="process",
            exception_type="BrokenProcessPool",
            message=message,
            traceback=message,
            condition=task.condition,
            replicate=task.replicate,
            exception_types=tuple(f"{c.__module__}.{c.__qualname__}" for c in cf.process.BrokenProcessPool.__mro__),
            attempts=2,
        ),
    )


class ProcessExecutor(Executor):
    """A pool of worker processes; the spec is pickled once per run and sent once per worker."""

    name = "process"

    def __init__(
        self,
        max_workers: int | None = None,
        batch_size: int | None = None,
        mp_context: str | None = None,
    ) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self.batch_size = batch_size
        self.mp_context = mp_context
        self.batcher: AdaptiveBatcher | None = None  # the run's, shared by its maps; kept for its sizes
        self._spec_blob = b""
        self._pool: cf.ProcessPoolExecutor | None = None

    def parallelism(self) -> int:
        return self.max_workers

    def start(self, spec: RunSpec) -> RunSpec:
        self._spec_blob = dumps_spec(spec)
        self._pool = self._new_pool()
        self.batcher = None  # a new run learns afresh; its maps (optimize trials) share what they learn
        return spec

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        context = multiprocessing.get_context(self.mp_context) if self.mp_context else None
        return cf.ProcessPoolExecutor(
            self.max_workers, mp_context=context, initializer=_init_process, initargs=(self._spec_blob,)
        )

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        """Batches sized by time; a worker that dies costs its batches in flight a re-run, one by one.

        The re-run finds the replicate that kills its worker: it becomes an error record,
        and the run goes on with a fresh pool (as RayExecution splits a failed batch).
        """
        assert self._pool is not None, "start() first"
        blob = dumps_conditions(conditions)
        if self.batcher is None:
            self.batcher = AdaptiveBatcher(self.max_workers, batch_size=self.batch_size)
        stream = _Stream(tasks, self.batcher, self.max_workers * _IN_FLIGHT_PER_WORKER)
        crashed = restarts = 0

        def submit(chunk: list[ReplicateTask]) -> cf.Future[list[ReplicateOutcome]]:
            assert self._pool is not None
            return self._pool.submit(_run_in_process, blob, chunk)

        try:
            while True:
                try:
                    yield from stream.outcomes(submit)
                    return
                except cf.process.BrokenProcessPool as exc:
                    task = stream.alone
                    yield from stream.retry_alone()
                    stream.alone = None
                    crashed += task is not None
                    restarts += 1
                    if crashed > _MAX_CRASHED_REPLICATES or restarts > 4 * _MAX_CRASHED_REPLICATES:
                        raise ExecutionError(
                            f"Worker processes keep dying ({restarts} times; out of memory, a crash in native "
                            "code, or os._exit); the finished replicates were kept. Try "
                            f"{hint('SerialExecution', '--executor serial')} to see the error in-process."
                        ) from exc
                    self._replace_broken_pool()
                    if task is not None:
                        logger.warning(
                            "Replicate %d of %r killed its worker process twice; recorded as failed",
                            task.replicate,
                            task.condition,
                        )
                        yield _worker_died(task)
                    else:
                        logger.warning(
                            "A worker process died; re-running its %d unfinished replicate(s) one by one",
                            len(stream.suspects),
                        )
        finally:
            stream.cancel()

    def _replace_broken_pool(self) -> None:
        broken = self._pool
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def stop(self) -> None:
        """Let idle workers exit on their own after a clean run; terminate them when work is pending."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        if not getattr(pool, "_pending_work_items", None):
            pool.shutdown(wait=True)
            return
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


class AsyncExecutor(Executor):
    """Replicates as coroutines on one event loop (in a helper thread); async steps overlap.

    Sync steps run on the loop and block it, so this suits pipelines whose slow
    parts are ``async def`` steps (network calls, async clients). Each replicate
    keeps its own ``random``/``numpy.random`` state across awaits, so results match
    a serial run.
    """

    name = "asyncio"  # the name it is registered and chosen by (`--executor asyncio`)

    def __init__(self, max_concurrency: int | None = None) -> None:
        self.max_concurrency = max_concurrency or 64

    def parallelism(self) -> int:
        return self.max_concurrency

    def start(self, spec: RunSpec) -> RunSpec:
        self.prepared = PreparedSpec.of(spec)
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        # Bounded both ways: at most max_concurrency replicates exist at once (not one coroutine per
        # task: a million of them took 2 GiB), and finished outcomes wait for the driver in a queue of
        # bounded size.
        results: queue.Queue[Any] = queue.Queue(maxsize=_ASYNC_QUEUE)
        stop = threading.Event()
        done = object()
        prepared = self.prepared
        # With the default seeding every replicate reseeds the globals before any step runs, so a
        # fresh one need not be handed the loop's own state first.
        turns = GlobalRNGTurns(fresh_needs_outer=prepared.spec.seeding.seed_fn is not None)

        def hand_over(item: Any) -> None:
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        async def worker(pending: Iterator[ReplicateTask]) -> None:
            for task in pending:  # one iterator shared by the workers: tasks go out in order
                if stop.is_set():
                    return
                program = replicate_program(prepared, conditions, task)
                outcome, _ = await IsolatedGlobalRNG(drive_async(program), turns)
                hand_over(outcome)

        async def main() -> None:
            pending = iter(tasks)
            try:
                await asyncio.gather(*(worker(pending) for _ in range(max(1, min(self.max_concurrency, len(tasks))))))
            finally:
                turns.finish()

        def runner() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                hand_over(exc)
            finally:
                hand_over(done)

        thread = threading.Thread(target=runner, name="crystallize-async", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise ExecutionError(f"the async executor failed: {item}") from item
                yield item
        finally:
            stop.set()
            thread.join()
