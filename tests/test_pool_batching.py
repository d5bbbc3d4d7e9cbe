"""Thread and process pools batch by time: small first batches, ~50 ms of work each, a spread tail.

What a user sees: progress moves a few replicates at a time, results equal a serial
run, and a worker that dies costs only the batches in flight (re-run one by one, so
the replicate that kills its worker is named and the rest are all recorded).
No timing assertions: sizes and counts only, with bounds that hold on a loaded machine.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crystallize import Experiment, ParallelExecution, Pipeline, SeedPlugin, SerialExecution, data_source, pipeline_step
from crystallize.engine import progress
from crystallize.engine.batching import AdaptiveBatcher
from crystallize.engine.plan import ReplicateOutcome, ReplicateTask
from crystallize.execution.base import Executor

PAUSE = 0.02  # seconds of sleep per replicate: a batch of ~50 ms holds at most 2 of them
REPLICATES = 160
WORKERS = 2
IN_FLIGHT = 2 * WORKERS  # batches a pool keeps submitted


# ------------------------------------------------------------------------------ the batcher


def sizes_until_done(batcher: AdaptiveBatcher, total: int, seconds: float) -> list[int]:
    """Drive ``batcher`` as an executor does, one batch at a time, each replicate taking ``seconds``."""
    sizes: list[int] = []
    remaining = total
    while remaining:
        size = batcher.next_size(remaining)
        sizes.append(size)
        remaining -= size
        batcher.learn([seconds] * size)
    return sizes


def test_first_batches_hold_one_replicate_until_a_duration_is_known() -> None:
    batcher = AdaptiveBatcher(4)
    assert [batcher.next_size(100_000) for _ in range(8)] == [1] * 8  # all sent before anything came back
    batcher.learn([1e-6])  # a very fast replicate: sizes grow, but only step by step
    grown = [batcher.next_size(100_000) for _ in range(4)]
    assert grown == [2, 4, 8, 16]


@pytest.mark.parametrize(("seconds", "expected"), [(0.001, 50), (0.0002, 250), (0.01, 5), (2.0, 1)])
def test_batches_converge_to_about_50_ms_of_work(seconds: float, expected: int) -> None:
    batcher = AdaptiveBatcher(4)
    sizes = sizes_until_done(batcher, 200_000, seconds)
    steady = sizes[len(sizes) // 2]  # well past the ramp, well before the tail
    assert steady == expected
    assert all(b <= 2 * max(a, 1) for a, b in itertools.pairwise(sizes))  # never more than doubles
    assert max(sizes) == expected  # neither the ramp nor the tail overshoots


def test_the_estimate_follows_replicates_that_slow_down() -> None:
    batcher = AdaptiveBatcher(2)
    for _ in range(30):
        batcher.learn([0.0001] * batcher.next_size(10**9))
    fast = batcher.next_size(10**9)
    for _ in range(30):
        batcher.learn([0.025] * batcher.next_size(10**9))
    assert fast == 500 and batcher.next_size(10**9) == 2


def test_an_explicit_batch_size_wins() -> None:
    batcher = AdaptiveBatcher(4, batch_size=7)
    assert batcher.next_size(1_000) == 7
    batcher.learn([10.0] * 7)  # slow replicates would want batches of 1
    assert batcher.next_size(1_000) == 7
    assert sizes_until_done(AdaptiveBatcher(4, batch_size=7), 30, 5.0) == [7, 7, 7, 7, 2]


def test_the_tail_is_spread_over_the_workers() -> None:
    workers = 4
    batcher = AdaptiveBatcher(workers)
    sizes = sizes_until_done(batcher, 3_000, 1e-6)  # the ideal batch (4096) is larger than the run
    assert sum(sizes) == 3_000
    remaining = 3_000
    for size in sizes:
        assert size <= math.ceil(remaining / (2 * workers))
        remaining -= size
    assert sizes[-2 * workers :] == [1] * (2 * workers)  # the last replicates go out one each
    assert len(sizes) < 60  # and the bulk in few batches


def test_learning_nothing_changes_nothing() -> None:
    batcher = AdaptiveBatcher(2)
    batcher.learn([])
    assert batcher.seconds_per_replicate is None and batcher.next_size(50) == 1
    assert batcher.next_size(0) == 1 and batcher.largest == 1


# ------------------------------------------------------------------------------ runs on the pools


@data_source
def one(ctx: Any) -> int:
    return 1


@pipeline_step()
def paced(data: int, ctx: Any, *, log: str = "", pause: float = PAUSE) -> Any:
    """Sleeps, notes that this replicate finished (in the worker), and draws a seeded metric."""
    time.sleep(pause)
    value = float(ctx.rng.random())
    if log:
        with open(log, "a") as handle:
            handle.write(f"{ctx['condition']} {ctx['replicate']}\n")
    return data, {"value": value}


@pipeline_step()
def dies_on(data: int, ctx: Any, *, victim: int = -1, marker_dir: str = "", log: str = "", pause: float = 0.0) -> Any:
    """Kills its worker process (like a segfault) at replicate ``victim``: once, or always without ``marker_dir``."""
    replicate = ctx["replicate"]
    with open(log, "a") as handle:
        handle.write(f"start {replicate}\n")
    if replicate == victim:
        marker = Path(marker_dir) / f"died-{replicate}" if marker_dir else None
        if marker is None or not marker.exists():
            if marker is not None:
                marker.write_text("died")
            os._exit(3)
    time.sleep(pause)
    return data, {"value": float(ctx.rng.random())}


@dataclass
class Watched(ParallelExecution):
    """ParallelExecution that keeps the executor it made, to read its batcher after the run."""

    made: ClassVar[list[Executor]] = []

    def create_executor(self) -> Executor:
        executor = super().create_executor()
        Watched.made.append(executor)
        return executor


class LagReporter:
    """A progress display that notes, at each update, how many replicates workers had finished by then."""

    def __init__(self, log: Path, lags: list[int]) -> None:
        self.log = log
        self.lags = lags
        self.seen = 0

    def __call__(self, experiment: str, label: str, tasks: Sequence[ReplicateTask], enabled: bool | None) -> Any:
        return self

    def __enter__(self) -> LagReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, outcome: ReplicateOutcome) -> None:
        self.seen += 1
        finished = self.log.read_text().count("\n") if self.log.exists() else 0
        self.lags.append(finished - self.seen)


@pytest.fixture
def watched_progress(tmp_path: Path) -> Iterator[tuple[Path, list[int]]]:
    log = tmp_path / "finished.log"
    lags: list[int] = []
    previous = progress.set_progress_factory(LagReporter(log, lags))
    try:
        yield log, lags
    finally:
        progress.set_progress_factory(previous)


def paced_experiment(plugin: Any, log: str = "") -> Experiment:
    return Experiment(
        one(), Pipeline([paced(log=log)]), plugins=[SeedPlugin(seed=11), plugin], name="paced", replicates=REPLICATES
    )


@pytest.fixture(scope="module")
def serial_values() -> list[float]:
    result = paced_experiment(SerialExecution(progress=False)).run()
    return list(result.metrics.baseline.metrics["value"])


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_progress_moves_a_few_replicates_at_a_time(
    kind: str, watched_progress: tuple[Path, list[int]], serial_values: list[float]
) -> None:
    log, lags = watched_progress
    Watched.made.clear()
    result = paced_experiment(Watched(max_workers=WORKERS, executor_type=kind), log=str(log)).run()
    assert list(result.metrics.baseline.metrics["value"]) == serial_values
    assert result.failed == 0
    # What the bar shows trails what the workers have finished by less than the batches in flight:
    # each replicate takes >= 20 ms, so a batch of ~50 ms holds at most 2 (4 batches in flight).
    # Batches as a fixed share of the run, ceil(160 / (2 workers * 8)) = 10 each, trail by >= 9.
    assert len(lags) == REPLICATES
    assert max(lags) <= IN_FLIGHT * 2, lags
    batcher = Watched.made[-1].batcher  # type: ignore[attr-defined]
    assert batcher.largest <= 2, batcher.largest
    assert batcher.given >= REPLICATES // 2


def dying_experiment(plugin: Any, **kwargs: Any) -> Experiment:
    return Experiment(
        one(), Pipeline([dies_on(**kwargs)]), plugins=[SeedPlugin(seed=5), plugin], name="dying", replicates=60
    )


def starts(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines()]


def test_a_worker_that_dies_once_costs_only_the_batches_in_flight(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    Watched.made.clear()
    kwargs: dict[str, Any] = {"victim": 40, "marker_dir": str(tmp_path), "log": str(log), "pause": PAUSE}
    result = dying_experiment(Watched(max_workers=WORKERS, executor_type="process", progress=False), **kwargs).run()
    assert (tmp_path / "died-40").exists()
    assert result.failed == 0  # the lost replicates were re-run, the victim too (it dies only once)

    ran = starts(log)
    rerun = len(ran) - 60
    batcher = Watched.made[-1].batcher  # type: ignore[attr-defined]
    assert 1 <= rerun <= IN_FLIGHT * batcher.largest, (rerun, batcher.largest)
    assert sorted(set(ran)) == list(range(60))

    # The marker is there now, so a serial run goes through in this process: same metrics.
    serial = dying_experiment(SerialExecution(progress=False), **{**kwargs, "log": str(tmp_path / "serial.log")}).run()
    assert list(result.metrics.baseline.metrics["value"]) == list(serial.metrics.baseline.metrics["value"])


def test_a_replicate_that_always_kills_its_worker_is_named_and_the_rest_are_recorded(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    result = dying_experiment(
        ParallelExecution(max_workers=WORKERS, executor_type="process", progress=False), victim=7, log=str(log)
    ).run()
    assert result.failed == 1
    assert list(result.replicate_errors) == ["baseline"]
    assert list(result.replicate_errors["baseline"]) == [7]
    error = result.replicate_errors["baseline"][7]
    assert error.stage == "process" and error.exception_type == "BrokenProcessPool" and error.attempts == 2
    assert "worker process died" in error.message
    assert result.metrics.baseline.replicates["value"] == [r for r in range(60) if r != 7]
    assert starts(log).count(7) == 2  # once in its batch, once alone


def test_workers_that_keep_dying_stop_the_run_with_the_finished_replicates_kept(tmp_path: Path) -> None:
    from crystallize.errors import ExecutionError

    @pipeline_step()
    def always_dies(data: int, ctx: Any) -> int:
        os._exit(4)

    experiment = Experiment(
        one(),
        Pipeline([always_dies()]),
        plugins=[ParallelExecution(max_workers=WORKERS, executor_type="process", progress=False)],
        name="hopeless",
        replicates=40,
    )
    with pytest.raises(ExecutionError, match="keep dying"):
        experiment.run()


INTERRUPT_SCRIPT = """
import os, sys, time
from crystallize import Experiment, ParallelExecution, Pipeline, SeedPlugin, data_source, pipeline_step
from crystallize.engine import progress


@data_source
def one(ctx):
    return 1


@pipeline_step()
def paced(data, ctx):
    time.sleep(0.05)
    with open("ends.log", "a") as log:
        log.write(f"{sys.argv[1]} {ctx['replicate']}\\n")
    return data, {"value": float(ctx.rng.random())}


class Received:  # the driver's progress display: notes every outcome that reached the driver

    def __call__(self, *args):
        return self

    def __enter__(self):
        self.seen = []
        return self

    def __exit__(self, *exc):
        with open("received.log", "a") as log:
            log.write("".join(f"{sys.argv[1]} {r}\\n" for r in self.seen))

    def update(self, outcome):
        self.seen.append(outcome.replicate)


progress.set_progress_factory(Received())
Experiment(
    one(),
    Pipeline([paced()]),
    plugins=[SeedPlugin(seed=9), ParallelExecution(max_workers=2, executor_type="process", progress=False)],
    name="interrupted",
    replicates=120,
).run(strategy=None if sys.argv[1] == "first" else "resume")
print("DONE", flush=True)
"""


def ended(log: Path, run: str) -> set[int]:
    return {int(r) for name, r in (line.split() for line in log.read_text().splitlines()) if name == run}


@pytest.mark.timeout(120)
def test_ctrl_c_loses_at_most_the_batches_in_flight(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(INTERRUPT_SCRIPT)
    log = tmp_path / "ends.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYSTALLIZE_")}
    first = subprocess.Popen(
        [sys.executable, str(script), "first"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: Ctrl-C reaches the driver and its workers, as in a terminal
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or len(ended(log, "first")) < 12):
            assert first.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGINT)
        out, _ = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    assert b"DONE" not in out
    finished_before = ended(log, "first")
    received = ended(tmp_path / "received.log", "first")
    assert 12 <= len(finished_before) < 120 and received <= finished_before
    # Replicates that had finished in a worker but never reached the driver: at most the batches in
    # flight (4 of ~50 ms, one 50 ms replicate each); batches of a fixed share of the run (8 each)
    # would lose every replicate finished in the first ~0.4 s.
    lost = finished_before - received
    assert len(lost) <= IN_FLIGHT, sorted(lost)

    second = subprocess.run(
        [sys.executable, str(script), "second"], cwd=tmp_path, env=env, capture_output=True, timeout=90
    )
    assert b"DONE" in second.stdout, second.stderr.decode()[-3000:]
    assert finished_before | ended(log, "second") == set(range(120))  # the resumed run did the rest


def _rebuild_only_in(pid: int) -> Unshippable:
    if os.getpid() != pid:
        raise RuntimeError("this object cannot cross to a worker")
    return Unshippable()


class Unshippable:
    """Pickles on the driver, fails to unpickle anywhere else (like a handle to a local resource)."""

    def __reduce__(self) -> Any:
        return (_rebuild_only_in, (os.getpid(),))


def test_a_spec_the_workers_cannot_load_is_reported_as_such_not_as_crashed_replicates() -> None:
    from crystallize.errors import ExecutionError

    experiment = Experiment(
        one(),
        Pipeline([paced(pause=0.0)]),
        plugins=[ParallelExecution(max_workers=WORKERS, executor_type="process", progress=False)],
        name="unshippable",
        replicates=5,
        initial_ctx={"handle": Unshippable()},
    )
    with pytest.raises(ExecutionError, match="could not load the run spec: RuntimeError: this object cannot cross"):
        experiment.run()
