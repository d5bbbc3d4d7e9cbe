"""Replicates on threads that miss the cache for the same input compute it once; the answer is unchanged."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from crystallize import (
    AsyncExecution,
    Experiment,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    pipeline_step,
)
from crystallize.engine import single_flight

CALLS = Path("calls.txt")  # in the test's private working folder


@data_source
def zero(ctx):
    return 0


@pipeline_step(cacheable=True)
def expensive(data, ctx):
    with CALLS.open("a") as log:
        log.write("x\n")
    time.sleep(0.3)
    return data + 42


@pipeline_step(cacheable=True)
async def expensive_async(data, ctx):
    with CALLS.open("a") as log:
        log.write("x\n")
    await asyncio.sleep(0.05)
    return data + 42


@pipeline_step()
def record(data, ctx, *, delta: float = 0.0):
    return data, {"value": data + delta, "replicate": ctx["replicate"]}


def experiment(execution, first_step) -> Experiment:
    # One seed for every replicate: a thread that seeds the global generators while another runs
    # the cacheable step would otherwise look like the step drew from them, which makes its entry
    # specific to that generator state (correct, and the reason the run warns about threads).
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([first_step(), record()]),
        treatments=[Treatment("shifted", {"delta": 1.0})],
        plugins=[execution, SeedPlugin(seed=3, auto_seed=False)],
        replicates=6,
        name="flight",
    )


def calls() -> int:
    return len(CALLS.read_text().splitlines()) if CALLS.exists() else 0


def test_threads_wait_for_the_one_computing_a_shared_cacheable_step() -> None:
    result = experiment(ParallelExecution(executor_type="thread", max_workers=4, progress=False), expensive).run()
    assert result.failed == 0
    assert calls() == 1  # 12 replicate-conditions, one input: one computation, 11 hits
    hits = sum(len(v) for v in result.provenance["cache_hits"].values())
    assert hits == 11
    CALLS.unlink()
    serial = experiment(SerialExecution(progress=False), expensive).run()  # same store: all hits now
    assert calls() == 0
    assert result.metrics.treatments["shifted"].metrics == serial.metrics.treatments["shifted"].metrics
    assert result.metrics.baseline.metrics == serial.metrics.baseline.metrics


def test_async_replicates_on_one_loop_never_wait_for_themselves() -> None:
    result = experiment(AsyncExecution(progress=False), expensive_async).run()
    assert result.failed == 0
    assert result.metrics.baseline.metrics["value"] == [42] * 6
    assert result.metrics.treatments["shifted"].metrics["value"] == [43.0] * 6


def test_a_flight_whose_thread_died_is_not_waited_for() -> None:
    scope = object()
    taken = threading.Event()

    def owner() -> None:
        assert single_flight.claim(scope, "k")
        taken.set()  # and exits without release, as a killed thread would

    thread = threading.Thread(target=owner)
    thread.start()
    thread.join()
    assert taken.is_set()
    assert single_flight.claim(scope, "k")  # taken over at once, not after a wait
    single_flight.release(scope, "k")


def test_a_waiter_is_woken_when_the_owner_releases() -> None:
    scope = object()
    assert single_flight.claim(scope, "k")
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(single_flight.claim(scope, "k")))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # waiting while the key is computed
    single_flight.release(scope, "k")
    waiter.join(5)
    assert outcome == [False]  # told to look in the cache again
