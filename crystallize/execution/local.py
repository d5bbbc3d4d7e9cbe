"""In-process and multi-process executors: serial, thread, process and asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..engine.batching import batch_size_for, batches
from ..engine.plan import Conditions, ReplicateOutcome, ReplicateTask, RunSpec
from ..engine.replicate import IsolatedGlobalRNG, PreparedSpec, drive_async, replicate_program, run_replicate, run_tasks
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


def _stream(
    pool: cf.Executor,
    submit: Callable[[list[ReplicateTask]], cf.Future[list[ReplicateOutcome]]],
    chunks: Iterable[list[ReplicateTask]],
    max_in_flight: int,
) -> Iterator[ReplicateOutcome]:
    """Keep at most ``max_in_flight`` batches submitted; yield outcomes as batches finish."""
    pending: set[cf.Future[list[ReplicateOutcome]]] = set()
    source = iter(chunks)
    try:
        for chunk in source:
            pending.add(submit(chunk))
            if len(pending) >= max_in_flight:
                break
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield from future.result()
                following = next(source, None)
                if following is not None:
                    pending.add(submit(following))
    finally:
        for future in pending:
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
        self._pool: cf.ThreadPoolExecutor | None = None

    def parallelism(self) -> int:
        return self.max_workers

    def shares_global_rng(self) -> bool:
        return self.max_workers > 1

    def start(self, spec: RunSpec) -> RunSpec:
        self.prepared = PreparedSpec.of(spec)
        self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="crystallize")
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        assert self._pool is not None, "start() first"
        pool = self._pool
        size = self.batch_size or batch_size_for(len(tasks), self.max_workers)
        yield from _stream(
            pool,
            lambda chunk: pool.submit(run_tasks, self.prepared, conditions, chunk),
            batches(tasks, size),
            self.max_workers * 2,
        )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_WORKER_SPEC: PreparedSpec | None = None
_WORKER_CONDITIONS: tuple[bytes, Conditions] | None = None


_PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent: int) -> None:
    """A worker's watchdog: once its parent is gone (the driver was killed), end the process at once."""
    while True:
        time.sleep(_PARENT_POLL_SECONDS)
        if os.getppid() != parent:
            os._exit(70)  # no cleanup: the driver that wanted the results is gone


def _init_process(spec_blob: bytes) -> None:
    global _WORKER_SPEC
    # Workers die with their driver: without this, a SIGKILLed driver leaves them running
    # the replicates already queued to them, and then waiting on the queue for minutes.
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="crystallize-watchdog", daemon=True).start()
    _WORKER_SPEC = PreparedSpec.of(loads(spec_blob))


def _run_in_process(conditions_blob: bytes, tasks: list[ReplicateTask]) -> list[ReplicateOutcome]:
    global _WORKER_CONDITIONS
    if _WORKER_SPEC is None:
        raise ExecutionError("worker process was not initialised with a run spec")
    if _WORKER_CONDITIONS is None or _WORKER_CONDITIONS[0] != conditions_blob:
        _WORKER_CONDITIONS = (conditions_blob, loads(conditions_blob))
    return run_tasks(_WORKER_SPEC, _WORKER_CONDITIONS[1], tasks)


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
        self._pool: cf.ProcessPoolExecutor | None = None

    def parallelism(self) -> int:
        return self.max_workers

    def start(self, spec: RunSpec) -> RunSpec:
        blob = dumps_spec(spec)
        context = multiprocessing.get_context(self.mp_context) if self.mp_context else None
        self._pool = cf.ProcessPoolExecutor(
            self.max_workers, mp_context=context, initializer=_init_process, initargs=(blob,)
        )
        return spec

    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        assert self._pool is not None, "start() first"
        pool = self._pool
        blob = dumps_conditions(conditions)
        size = self.batch_size or batch_size_for(len(tasks), self.max_workers)
        try:
            yield from _stream(
                pool,
                lambda chunk: pool.submit(_run_in_process, blob, chunk),
                batches(tasks, size),
                self.max_workers * 2,
            )
        except cf.process.BrokenProcessPool as exc:
            raise ExecutionError(
                "A worker process died (out of memory, a crash in native code, or os._exit); "
                "the finished replicates were kept. Try SerialExecution to see the error in-process."
            ) from exc

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
        results: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        done = object()

        async def one(task: ReplicateTask, gate: asyncio.Semaphore) -> None:
            async with gate:
                if stop.is_set():
                    return
                outcome, _ = await IsolatedGlobalRNG(drive_async(replicate_program(self.prepared, conditions, task)))
                results.put(outcome)

        async def main() -> None:
            gate = asyncio.Semaphore(self.max_concurrency)
            await asyncio.gather(*(one(task, gate) for task in tasks))

        def runner() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                results.put(exc)
            finally:
                results.put(done)

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
