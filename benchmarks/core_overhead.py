"""Core overhead of crystallize on this machine.

Run it with::

    python benchmarks/core_overhead.py
    python benchmarks/core_overhead.py --replicates 5000 --repeats 3 --skip-process   # quicker
    python benchmarks/core_overhead.py --profile                                      # always profile

It measures

(a) the per-replicate cost of the engine: a 3-step pipeline whose steps return the
    data unchanged, a datasource returning 0, one condition, ``--replicates``
    replicates; microseconds per replicate are the median over ``--repeats`` runs,
    with SerialExecution and, for context, ParallelExecution(executor_type="process").
    The run's fixed cost (a 1-replicate run) is printed alongside.
(b) the cost of reading a 10 MB NumPy array from a FrozenContext (``ctx["arr"]``),
    median nanoseconds per read, next to ``copy.deepcopy`` of the same array (what a
    copy-on-read context would pay).

Runs execute in a private temporary folder, deleted afterwards, so nothing is
written into the repository; the results are only printed. When the serial
overhead is above ``--profile-threshold`` microseconds (or with ``--profile``), a
cProfile of a serial run is printed with its top hotspots.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import os
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import crystallize
from crystallize import (
    Experiment,
    FrozenContext,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    data_source,
    pipeline_step,
)


@data_source
def zero(ctx: Any) -> int:
    return 0


@pipeline_step
def first(data: Any, ctx: Any) -> Any:
    return data


@pipeline_step
def second(data: Any, ctx: Any) -> Any:
    return data


@pipeline_step
def third(data: Any, ctx: Any) -> Any:
    return data


@contextlib.contextmanager
def private_workdir() -> Iterator[str]:
    """Run inside a temporary folder (artifact store and step cache land there), then remove it."""
    previous = os.getcwd()
    saved_cache = os.environ.pop("CRYSTALLIZE_CACHE_DIR", None)
    with tempfile.TemporaryDirectory(prefix="crystallize-bench-") as folder:
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(previous)
            if saved_cache is not None:
                os.environ["CRYSTALLIZE_CACHE_DIR"] = saved_cache


def noop_experiment(execution: Any, replicates: int) -> Experiment:
    return Experiment(
        zero(),
        Pipeline([first(), second(), third()]),
        plugins=[execution],
        name="core_overhead",
        replicates=replicates,
    )


def time_run(make_execution: Callable[[], Any], replicates: int) -> float:
    """Wall seconds of one ``run()`` (executor start-up and shutdown included)."""
    exp = noop_experiment(make_execution(), replicates)
    started = time.perf_counter()
    result = exp.run()
    elapsed = time.perf_counter() - started
    if result.failed:
        raise RuntimeError(f"benchmark run had failures: {result.errors}")
    return elapsed


def per_replicate_us(make_execution: Callable[[], Any], replicates: int, repeats: int) -> tuple[float, float, float]:
    """(median µs/replicate, min µs/replicate, fixed ms of a 1-replicate run)."""
    time_run(make_execution, min(replicates, 200))  # warm-up: imports, caches, pools
    samples = [time_run(make_execution, replicates) / replicates * 1e6 for _ in range(repeats)]
    fixed = statistics.median(time_run(make_execution, 1) for _ in range(repeats)) * 1e3
    return statistics.median(samples), min(samples), fixed


def ns_per_call(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean ns per call of ``fn`` in a loop of ``calls``, loop cost removed."""
    loop = range(calls)

    def empty() -> None:
        return None

    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in loop:
            empty()
        baseline = time.perf_counter_ns() - started
        started = time.perf_counter_ns()
        for _ in loop:
            fn()
        samples.append(max(0.0, (time.perf_counter_ns() - started - baseline) / calls))
    return statistics.median(samples)


def context_read_costs(megabytes: int, reads: int, copies: int, repeats: int) -> dict[str, float]:
    array = np.ones(megabytes * 1024 * 1024 // 8, dtype=np.float64)
    ctx = FrozenContext({"arr": array})
    plain = {"arr": array}
    assert ctx["arr"] is ctx["arr"], "FrozenContext returned a new object per read"
    return {
        "ctx_read_ns": ns_per_call(lambda: ctx["arr"], reads, repeats),
        "dict_read_ns": ns_per_call(lambda: plain["arr"], reads, repeats),
        "deepcopy_ns": ns_per_call(lambda: copy.deepcopy(array), copies, repeats),
        "nbytes": float(array.nbytes),
    }


def profile_serial(replicates: int, top: int) -> str:
    exp = noop_experiment(SerialExecution(progress=False), replicates)
    profiler = cProfile.Profile()
    profiler.enable()
    exp.run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--replicates", type=int, default=20_000, help="replicates per timed serial run (default 20000)"
    )
    parser.add_argument(
        "--process-replicates", type=int, default=None, help="replicates per process-pool run (default: --replicates)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the median is reported")
    parser.add_argument("--workers", type=int, default=None, help="process pool size (default: CPU count)")
    parser.add_argument("--skip-process", action="store_true", help="skip the process-pool measurement")
    parser.add_argument("--megabytes", type=int, default=10, help="size of the context array in MiB (default 10)")
    parser.add_argument("--reads", type=int, default=200_000, help="ctx['arr'] reads per repeat")
    parser.add_argument("--copies", type=int, default=20, help="deepcopies per repeat")
    parser.add_argument("--profile", action="store_true", help="always print a cProfile of a serial run")
    parser.add_argument(
        "--profile-threshold", type=float, default=150.0, help="profile when serial µs/replicate exceeds this"
    )
    parser.add_argument("--profile-replicates", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=15, help="hotspots to print")
    args = parser.parse_args(argv)

    print(
        "command:", shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["core_overhead.py", *argv])
    )
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), numpy {np.__version__}, "
        f"crystallize {crystallize.__version__}, {platform.machine()} {platform.system()}, cpus {os.cpu_count()}"
    )
    print()

    rows: list[tuple[str, str, str]] = [("measurement", "median", "detail")]
    with private_workdir():
        serial_us, serial_min, serial_fixed = per_replicate_us(
            lambda: SerialExecution(progress=False), args.replicates, args.repeats
        )
        rows.append(
            (
                f"serial, 3 no-op steps, {args.replicates} reps",
                f"{serial_us:.1f} µs/rep",
                f"min {serial_min:.1f} µs/rep; 1-rep run {serial_fixed:.1f} ms",
            )
        )
        if not args.skip_process:
            n = args.process_replicates or args.replicates
            workers = args.workers or os.cpu_count() or 1
            proc_us, proc_min, proc_fixed = per_replicate_us(
                lambda: ParallelExecution(max_workers=workers, executor_type="process", progress=False),
                n,
                args.repeats,
            )
            rows.append(
                (
                    f"process x{workers}, 3 no-op steps, {n} reps",
                    f"{proc_us:.1f} µs/rep",
                    f"min {proc_min:.1f} µs/rep; 1-rep run {proc_fixed:.1f} ms (pool start-up)",
                )
            )
        reads = context_read_costs(args.megabytes, args.reads, args.copies, args.repeats)
        mb = reads["nbytes"] / 2**20
        rows.append(
            (
                f'ctx["arr"], {mb:.0f} MiB float64 array',
                f"{reads['ctx_read_ns']:.0f} ns",
                "no copy (same object each read)",
            )
        )
        rows.append(("plain dict read, same array", f"{reads['dict_read_ns']:.0f} ns", "lower bound"))
        rows.append(
            (
                f"copy.deepcopy, {mb:.0f} MiB array",
                f"{reads['deepcopy_ns'] / 1e3:.0f} µs",
                f"{reads['deepcopy_ns'] / max(reads['ctx_read_ns'], 1.0):,.0f}x a ctx read",
            )
        )
        print(table(rows))

        if args.profile or serial_us > args.profile_threshold:
            why = (
                "--profile" if args.profile else f"serial overhead {serial_us:.1f} µs > {args.profile_threshold:.0f} µs"
            )
            print()
            print(
                f"cProfile of a serial run of {args.profile_replicates} replicates ({why}), top {args.top} by tottime:"
            )
            print(profile_serial(args.profile_replicates, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
