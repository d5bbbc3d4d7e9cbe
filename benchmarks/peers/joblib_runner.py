"""The benchmark workloads as a plain joblib loop: what a user writes without a framework.

The same kernels as the Crystallize runs (``workloads.py``), one call per replicate and
condition, seeded per replicate, ``joblib.Parallel(n_jobs=-1)`` with its default backend
(loky processes) and batching; the cacheable step goes through ``joblib.Memory``; optimize
is a loop of 20 ``Parallel`` calls of 10 replicates each. Needs only joblib (and NumPy for
the NumPy workload).

    python joblib_runner.py '{"runner": "joblib", "workloads": [...], ...}'
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import joblib
import workloads as wl
from joblib import Parallel, delayed


def noop_replicate(replicate: int, delta: float) -> dict[str, float]:
    wl.seed_globals(wl.replicate_seed(replicate))
    data = 0
    return {"value": data + delta}


def cpu_replicate(replicate: int, loops: int) -> dict[str, float]:
    wl.seed_globals(wl.replicate_seed(replicate))
    return {"burn": wl.burn(loops)}


def numpy_replicate(replicate: int, array: Any) -> dict[str, float]:
    wl.seed_globals(wl.replicate_seed(replicate))
    return {"dot": wl.numpy_kernel(array)}


def sleep_replicate(replicate: int) -> dict[str, float]:
    wl.seed_globals(wl.replicate_seed(replicate))
    wl.sleep_io()
    return {"waited": 1.0}


def cached_replicate(replicate: int, delta: float, cached_expensive: Any, loops: int) -> dict[str, float]:
    wl.seed_globals(wl.replicate_seed(replicate))
    data = cached_expensive(0, loops)
    return {"value": data + delta}


def expensive(data: int, loops: int) -> int:
    return data + wl.burn(loops)


def one_run(workload: str, spec: dict[str, Any], array: Any, folder: str) -> None:
    sizes, loops = spec["sizes"], spec["burn_loops"]
    parallel = Parallel(n_jobs=-1)
    if workload == "noop":
        parallel(delayed(noop_replicate)(r, d) for d in (0.0, 1.0) for r in range(sizes["noop"]))
    elif workload == "cpu":
        parallel(delayed(cpu_replicate)(r, loops) for r in range(sizes["cpu"]))
    elif workload == "numpy":
        parallel(delayed(numpy_replicate)(r, array) for r in range(sizes["numpy"]))
    elif workload == "sleep":
        parallel(delayed(sleep_replicate)(r) for r in range(sizes["sleep"]))
    elif workload == "cached":
        memory = joblib.Memory(location=os.path.join(folder, "joblib-cache"), verbose=0)
        cached = memory.cache(expensive)
        heavy = loops * wl.EXPENSIVE_MULTIPLE
        parallel(delayed(cached_replicate)(r, d, cached, heavy) for d in (0.0, 1.0) for r in range(sizes["cached"]))
    elif workload == "optimize":
        best = None
        for delta in wl.trial_deltas(int(sizes["optimize_trials"])):
            values = parallel(delayed(noop_replicate)(r, delta) for r in range(int(sizes["optimize_replicates"])))
            score = sum(v["value"] for v in values) / len(values)
            best = score if best is None else min(best, score)
    else:
        raise SystemExit(f"unknown workload {workload!r}")


def main() -> None:
    spec = wl.read_spec()
    out: dict[str, Any] = {"measurements": [], "startup": {}, "errors": [], "versions": {}}
    array = None
    if "numpy" in spec["workloads"]:
        try:
            array = wl.make_array(int(spec["sizes"]["numpy_mib"]))
        except ImportError:
            out["errors"].append({"workload": "numpy", "error": "numpy is not installed in this environment"})
    started = time.perf_counter()
    Parallel(n_jobs=-1)(delayed(noop_replicate)(r, 0.0) for r in range(4))  # starts loky's workers
    out["startup"]["loky"] = {"first_run_seconds": time.perf_counter() - started}
    for workload in spec["workloads"]:
        if workload == "numpy" and array is None:
            continue
        try:
            repeats = int(spec["repeats"].get(workload, 1))

            def run(index: int, workload: str = workload) -> None:
                folder = wl.chdir_fresh(spec["workdir"], f"joblib-{workload}-{index}")
                one_run(workload, spec, array, folder)

            times = wl.timed_runs(run, repeats)
            extra: dict[str, Any] = {}
            if workload == "optimize":
                units = int(spec["sizes"]["optimize_trials"])
                extra["replicates_per_trial"] = int(spec["sizes"]["optimize_replicates"])
            else:
                units = int(spec["sizes"][workload]) * (2 if workload in ("noop", "cached") else 1)
            out["measurements"].append(wl.measurement(workload, "joblib", "loky", units, times, **extra))
        except Exception as exc:  # noqa: BLE001 - reported, the other workloads go on
            out["errors"].append({"workload": workload, "error": wl.error_text(exc), "trace": traceback.format_exc()})
    out["versions"] = wl.versions("joblib", "numpy")
    wl.emit(out)


if __name__ == "__main__":
    main()
