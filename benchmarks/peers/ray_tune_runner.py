"""The optimize workload in Ray Tune, with its default settings, as a user would run it.

The same objective as the Crystallize runs: a trial runs 10 seeded replicates of the no-op
pipeline (``value = 0 + delta``) and reports their mean; the 20 candidates are the same
deltas (``tune.grid_search`` over ``workloads.trial_deltas``), so both sides do the same
work. Ray is started apart (private temp dir, loopback, token authentication) and timed
as start-up; each ``Tuner.fit()`` writes its results under this run's temporary folder.
Needs only ``ray[tune]``.

    python ray_tune_runner.py '{"runner": "ray-tune", "workloads": ["optimize"], ...}'
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from typing import Any

import workloads as wl

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds loopback only

import ray
from ray import tune


def objective(config: dict[str, Any]) -> None:
    replicates = int(config["replicates"])
    values = []
    for replicate in range(replicates):
        wl.seed_globals(wl.replicate_seed(replicate))
        data = 0
        values.append(data + float(config["delta"]))
    tune.report({"value": sum(values) / len(values)})


def fit(spec: dict[str, Any], folder: str) -> float:
    sizes = spec["sizes"]
    tuner = tune.Tuner(
        objective,
        param_space={
            "delta": tune.grid_search(wl.trial_deltas(int(sizes["optimize_trials"]))),
            "replicates": int(sizes["optimize_replicates"]),
        },
        tune_config=tune.TuneConfig(metric="value", mode="min"),
        run_config=tune.RunConfig(storage_path=os.path.join(folder, "ray_results")),
    )
    results = tuner.fit()
    best = results.get_best_result()
    return float(best.metrics["value"])


def main() -> None:
    spec = wl.read_spec()
    out: dict[str, Any] = {"measurements": [], "startup": {}, "errors": [], "versions": wl.versions("ray")}
    started = time.perf_counter()
    root = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    ray.init(
        _temp_dir=tempfile.mkdtemp(prefix="r", dir=root),
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
    )
    out["startup"]["ray-tune"] = {"first_run_seconds": time.perf_counter() - started}
    try:
        repeats = int(spec["repeats"].get("optimize", 1))

        def run(index: int) -> None:
            fit(spec, wl.chdir_fresh(spec["workdir"], f"tune-{index}"))

        times = wl.timed_runs(run, repeats)
        out["measurements"].append(
            wl.measurement(
                "optimize",
                "ray-tune",
                "tune",
                int(spec["sizes"]["optimize_trials"]),
                times,
                replicates_per_trial=int(spec["sizes"]["optimize_replicates"]),
            )
        )
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        out["errors"].append({"workload": "optimize", "error": wl.error_text(exc), "trace": traceback.format_exc()})
    finally:
        ray.shutdown()
    wl.emit(out)


if __name__ == "__main__":
    main()
