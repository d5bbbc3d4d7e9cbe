"""Compare executors on this machine: no-op replicates (overhead), CPU-bound replicates (speed-up),
and the driver's peak memory for many replicates under Ray.

    python benchmarks/executors.py                       # all scenarios, default sizes
    python benchmarks/executors.py --only noop --noop-replicates 10000
    python benchmarks/executors.py --only memory --memory-replicates 200000

Ray's start-up (``ray.init`` of a private local Ray plus its first workers) is timed
apart from the runs. Every timed run is repeated ``--repeats`` times; medians are shown.
Runs happen in a temporary folder, which is removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from crystallize import (
    Experiment,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    data_source,
    pipeline_step,
    treatment,
)


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def noop_a(data, ctx):
    return data


@pipeline_step()
def noop_b(data, ctx):
    return data


@pipeline_step()
def record(data, ctx, *, delta: float = 0.0):
    return data, {"value": data + delta}


@pipeline_step()
def burn_20ms(data, ctx):
    """About 20 ms of pure-Python CPU work (calibrated at start-up)."""
    total = 0
    for i in range(BURN_LOOPS):
        total += i * i
    return data, {"burn": total % 7}


BURN_LOOPS = 1


def calibrate_burn(seconds: float = 0.02) -> int:
    """Loop count for ``seconds`` of work: the median of five timings of a 50 ms loop."""
    loops = 1_000_000
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i * i
        rates.append(loops / (time.perf_counter() - started))
    return max(1, int(statistics.median(rates) * seconds))


def noop_experiment(execution, replicates: int) -> Experiment:
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([noop_a(), noop_b(), record()]),
        plugins=[SeedPlugin(seed=1), execution],
        treatments=[treatment("shifted", {"delta": 1.0})],
        replicates=replicates,
        name="bench_noop",
    )


def burn_experiment(execution, replicates: int) -> Experiment:
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([burn_20ms()]),
        plugins=[SeedPlugin(seed=1), execution],
        replicates=replicates,
        name="bench_burn",
    )


def timed(build, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        experiment = build()
        started = time.perf_counter()
        result = experiment.run()
        times.append(time.perf_counter() - started)
        assert result.failed == 0, result.errors
    return statistics.median(times), times


def process_pool():
    return ParallelExecution(executor_type="process", max_workers=2, progress=False)


def ray_execution():
    from crystallize_ray import RayExecution

    return RayExecution(progress=False)


def start_ray() -> float:
    """Start a private local Ray and warm its workers; return the seconds it took."""
    started = time.perf_counter()
    noop_experiment(ray_execution(), 4).run()
    return time.perf_counter() - started


def scenario_noop(replicates: int, repeats: int) -> None:
    print(f"\n== {replicates:,} no-op replicates x 2 conditions (3 steps each) ==")
    rows = [
        ("SerialExecution", lambda: noop_experiment(SerialExecution(progress=False), replicates)),
        (
            "ParallelExecution(process, 2)",
            lambda: noop_experiment(
                ParallelExecution(executor_type="process", max_workers=2, progress=False), replicates
            ),
        ),
        ("RayExecution (Ray already up)", lambda: noop_experiment(ray_execution(), replicates)),
    ]
    results = {}
    for label, build in rows:
        median, times = timed(build, REPEATS)
        results[label] = median
        per = median / (2 * replicates) * 1e6
        print(f"{label:32s} median {median:7.3f} s  ({per:6.1f} us/replicate)  runs {[round(t, 3) for t in times]}")
    ratio = results["RayExecution (Ray already up)"] / results["SerialExecution"]
    print(f"Ray / serial wall-time ratio: {ratio:.2f} (target <= 1.0)")


def scenario_burn(replicates: int, repeats: int) -> None:
    print(f"\n== {replicates} replicates of a ~20 ms CPU-bound step (1 condition), 2 cores ==")
    serial, s_times = timed(lambda: burn_experiment(SerialExecution(progress=False), replicates), repeats)
    process, _ = timed(lambda: burn_experiment(process_pool(), replicates), repeats)
    ray_time, _ = timed(lambda: burn_experiment(ray_execution(), replicates), repeats)
    per = serial / replicates * 1000
    runs = [round(t, 2) for t in s_times]
    print(f"SerialExecution                  median {serial:6.2f} s  ({per:.1f} ms/replicate) runs {runs}")
    print(f"ParallelExecution(process, 2)    median {process:6.2f} s  speed-up {serial / process:4.2f}x")
    speedup = serial / ray_time
    print(f"RayExecution                     median {ray_time:6.2f} s  speed-up {speedup:4.2f}x (target >= 1.8x)")


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    sys.path.insert(0, {bench_dir!r})
    import executors as bench
    replicates = int(sys.argv[1])
    bench.noop_experiment(bench.ray_execution(), 4).run()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = bench.burn_free(replicates).run()
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{{replicates}} {{elapsed:.1f}} {{base / 1024:.0f}} {{peak / 1024:.0f}} {{result.failed}}")
    """
)


def burn_free(replicates: int) -> Experiment:
    """One condition of no-op replicates, for the memory scenario."""
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([noop_a(), record()]),
        plugins=[SeedPlugin(seed=1), ray_execution()],
        replicates=replicates,
        name="bench_memory",
    )


def scenario_memory(replicates: int) -> None:
    print(f"\n== driver peak memory, {replicates:,} no-op replicates under RayExecution (fresh process) ==")
    script = MEMORY_SCRIPT.format(bench_dir=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script, str(replicates)], capture_output=True, text=True, check=True, cwd=os.getcwd()
    ).stdout.split()
    count, elapsed, base, peak, failed = out[-5:]
    print(
        f"replicates {int(count):,}: {float(elapsed):.1f} s, driver peak RSS {peak} MiB "
        f"(after Ray start-up {base} MiB; target < 1024 MiB), failed {failed}"
    )


REPEATS = 3


def main() -> None:
    global REPEATS, BURN_LOOPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["noop", "burn", "memory"], action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noop-replicates", type=int, default=10_000)
    parser.add_argument("--burn-replicates", type=int, default=400)
    parser.add_argument("--memory-replicates", type=int, default=200_000)
    args = parser.parse_args()
    REPEATS = args.repeats
    only = set(args.only or ["noop", "burn", "memory"])
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    import ray

    print(f"python {platform.python_version()}, ray {ray.__version__}, cpus {os.cpu_count()}, {platform.machine()}")
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        os.environ.setdefault("CRYSTALLIZE_CACHE_URI", os.path.join(workdir, ".cache"))
        if only & {"noop", "burn"}:
            print(f"Ray start-up (private local Ray + first workers): {start_ray():.2f} s")
        if "noop" in only:
            scenario_noop(args.noop_replicates, args.repeats)
        if "burn" in only:
            BURN_LOOPS = calibrate_burn()
            burn_20ms.step_function.__globals__["BURN_LOOPS"] = BURN_LOOPS
            scenario_burn(args.burn_replicates, args.repeats)
        if "memory" in only:
            scenario_memory(args.memory_replicates)
        os.chdir("/")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n(this driver's own peak RSS: {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
