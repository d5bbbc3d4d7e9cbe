"""Times the benchmark workloads as Crystallize experiments, on the executors asked for.

The same file runs under our package (runner ``ours``) and under upstream
``crystallize-ml==0.27.0`` in its own virtual environment (runner ``crystallize027``): it uses
only the API both share (top-level imports and ``crystallize.experiments.optimizers``), so
both time the very same experiment. Ray executors are offered only where ``crystallize_ray``
imports.

    python crystallize_runner.py '{"runner": "ours", "executors": ["serial"], ...}'

Prints one ``RESULT {json}`` line (see ``workloads.emit``); ``compare_executors.py`` drives it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from typing import Any

import workloads as wl

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
from crystallize.experiments.optimizers import BaseOptimizer, Objective

# ---------------------------------------------------------------- the experiment's parts


@data_source
def zero(ctx: Any) -> int:
    return 0


@data_source
def big_array(ctx: Any, *, array: Any = None) -> Any:
    """Hands out the array made on the driver: moving it to the workers is what is measured."""
    return array


@pipeline_step()
def pass_through(data: Any, ctx: Any) -> Any:
    return data


@pipeline_step()
def record(data: Any, ctx: Any, *, delta: float = 0.0) -> Any:
    return data, {"value": data + delta}


@pipeline_step()
def burn_step(data: Any, ctx: Any, *, loops: int = 1) -> Any:
    return data, {"burn": wl.burn(loops)}


@pipeline_step()
def crunch(data: Any, ctx: Any) -> Any:
    return 0, {"dot": wl.numpy_kernel(data)}


@pipeline_step()
def wait_io(data: Any, ctx: Any) -> Any:
    wl.sleep_io()
    return data, {"waited": 1.0}


@pipeline_step(cacheable=True)
def expensive(data: Any, ctx: Any, *, loops: int = 1) -> Any:
    """The same input for every replicate and condition: computed once, then a cache hit."""
    return data + wl.burn(loops)


class FixedRandomSearch(BaseOptimizer):
    """A user's ask/tell random search over ``delta`` (the same candidates for every runner)."""

    def __init__(self, objective: Any, deltas: list[float]) -> None:
        super().__init__(objective)
        self.deltas = deltas
        self.scores: list[float] = []

    def ask(self) -> list[Any]:
        index = len(self.scores)
        return [Treatment(f"trial_{index}", {"delta": self.deltas[index]})]

    def tell(self, objective_values: dict[str, float]) -> None:
        self.scores.append(float(next(iter(objective_values.values()))))

    def get_best_treatment(self) -> Any:
        best = min(range(len(self.scores)), key=self.scores.__getitem__)
        return Treatment("best", {"delta": self.deltas[best]})


SHIFTED = Treatment("shifted", {"delta": 1.0})

# ---------------------------------------------------------------- executors


class Executors:
    """Builds the execution plugin for a name; owns any Ray cluster it had to start."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.cluster: Any = None
        self.cluster_seconds = 0.0

    def plugin(self, name: str) -> Any:
        if name == "serial":
            return _quiet(SerialExecution)
        if name in ("thread", "process"):
            return _quiet(ParallelExecution, executor_type=name)
        if name == "asyncio":
            return _quiet(AsyncExecution)
        if name == "ray":
            from crystallize_ray import RayExecution

            return RayExecution(progress=False)
        if name == "ray-cluster":
            from crystallize_ray import RayExecution

            return RayExecution(progress=False, address=self.start_cluster())
        raise SystemExit(f"unknown executor {name!r}")

    def start_cluster(self) -> str:
        """A head with no CPUs and two 1-CPU worker nodes on this machine, private temp dir."""
        if self.cluster is None:
            started = time.perf_counter()
            from ray.cluster_utils import Cluster

            root = os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="cxb-", dir="/tmp")
            os.environ["RAY_TMPDIR"] = root  # Ray's address file goes there, not to the machine's /tmp/ray
            os.makedirs(os.path.join(root, "ray"), exist_ok=True)
            ray_tmp = tempfile.mkdtemp(prefix="r", dir=root)
            self.cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 0, "temp_dir": ray_tmp, "include_dashboard": False},
            )
            for _ in range(2):
                self.cluster.add_node(num_cpus=1)
            self.cluster.wait_for_nodes()
            self.cluster_seconds = time.perf_counter() - started
        return str(self.cluster.address)

    def close(self) -> None:
        if self.cluster is not None:
            import ray

            ray.shutdown()
            self.cluster.shutdown()


def _quiet(cls: Any, **options: Any) -> Any:
    """The plugin without a progress bar (0.27's serial and async plugins take no such option)."""
    try:
        return cls(progress=False, **options)
    except TypeError:
        return cls(**options)


# ---------------------------------------------------------------- workloads


def build(workload: str, plugin: Any, spec: dict[str, Any], array: Any = None) -> Experiment:
    sizes, loops = spec["sizes"], spec["burn_loops"]
    plugins = [SeedPlugin(seed=wl.ROOT_SEED), plugin]
    if workload == "noop":
        pipeline, source, reps, treatments = Pipeline([pass_through(), record()]), zero(), sizes["noop"], [SHIFTED]
    elif workload == "cpu":
        pipeline, source, reps, treatments = Pipeline([burn_step(loops=loops)]), zero(), sizes["cpu"], []
    elif workload == "numpy":
        pipeline, source, reps, treatments = Pipeline([crunch()]), big_array(array=array), sizes["numpy"], []
    elif workload == "sleep":
        pipeline, source, reps, treatments = Pipeline([wait_io()]), zero(), sizes["sleep"], []
    elif workload == "cached":
        steps = [expensive(loops=loops * wl.EXPENSIVE_MULTIPLE), record()]
        pipeline, source, reps, treatments = Pipeline(steps), zero(), sizes["cached"], [SHIFTED]
    elif workload in ("optimize", "scale"):
        reps = int(sizes.get("scale", 1)) if workload == "scale" else 1
        pipeline, source, treatments = Pipeline([pass_through(), record()]), zero(), []
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    return Experiment(
        datasource=source,
        pipeline=pipeline,
        plugins=plugins,
        treatments=treatments,
        replicates=reps,
        name=f"bench_{workload}",
    )


def check(result: Any) -> None:
    errors = getattr(result, "errors", None) or {}
    if errors:
        first = next(iter(errors.items()))
        raise RuntimeError(f"{len(errors)} replicate(s) failed, first {first[0]}: {first[1]!r}")


def units_of(workload: str, spec: dict[str, Any]) -> int:
    """Replicate-conditions per run (optimize: trials)."""
    sizes = spec["sizes"]
    if workload == "optimize":
        return int(sizes["optimize_trials"])
    return int(sizes[workload]) * (2 if workload in ("noop", "cached") else 1)


def measure(workload: str, executor: str, executors: Executors, spec: dict[str, Any], array: Any) -> dict[str, Any]:
    repeats = int(spec["repeats"].get(workload, 1))
    sizes = spec["sizes"]
    base = spec["workdir"]

    def one_run(index: int) -> None:
        wl.chdir_fresh(base, f"{executor}-{workload}-{index}")  # fresh store and step cache per run
        experiment = build(workload, executors.plugin(executor), spec, array)
        if workload == "optimize":
            trials = int(sizes["optimize_trials"])
            optimizer = FixedRandomSearch(Objective("value", "minimize"), wl.trial_deltas(trials))
            experiment.optimize(optimizer, num_trials=trials, replicates_per_trial=int(sizes["optimize_replicates"]))
        else:
            check(experiment.run())

    times = wl.timed_runs(one_run, repeats)
    extra: dict[str, Any] = {}
    if workload == "optimize":
        extra["replicates_per_trial"] = int(sizes["optimize_replicates"])
    if workload == "numpy":
        extra["array_mib"] = int(sizes["numpy_mib"])
    return wl.measurement(workload, spec["runner"], executor, units_of(workload, spec), times, **extra)


def warm_up(executor: str, executors: Executors, spec: dict[str, Any]) -> float:
    """A 4-replicate no-op run: imports, pools, and for Ray its start-up (reported apart)."""
    small = dict(spec, sizes={**spec["sizes"], "noop": 4})
    wl.chdir_fresh(spec["workdir"], f"{executor}-warmup")
    started = time.perf_counter()
    check(build("noop", executors.plugin(executor), small).run())
    return time.perf_counter() - started


def run_workloads(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"measurements": [], "startup": {}, "errors": [], "versions": {}}
    executors = Executors(spec["workdir"])
    array = None
    try:
        if "numpy" in spec["workloads"]:
            try:
                array = wl.make_array(int(spec["sizes"]["numpy_mib"]))
            except ImportError:
                out["errors"].append({"workload": "numpy", "error": "numpy is not installed in this environment"})
        for executor in spec["executors"]:
            try:
                first = warm_up(executor, executors, spec)
            except Exception as exc:  # noqa: BLE001 - reported, the other executors go on
                out["errors"].append({"executor": executor, "error": wl.error_text(exc), "trace": _trace()})
                continue
            out["startup"][executor] = {"first_run_seconds": first, "cluster_seconds": executors.cluster_seconds}
            for workload in spec["workloads"]:
                if workload == "numpy" and array is None:
                    continue
                try:
                    out["measurements"].append(measure(workload, executor, executors, spec, array))
                except Exception as exc:  # noqa: BLE001
                    out["errors"].append(
                        {"executor": executor, "workload": workload, "error": wl.error_text(exc), "trace": _trace()}
                    )
    finally:
        executors.close()
    out["versions"] = wl.versions("crystallize", "numpy", "ray")
    return out


def run_scale_point(spec: dict[str, Any]) -> dict[str, Any]:
    """One point of the scaling curve, in a fresh process: time and the driver's peak memory."""
    executor, replicates = spec["executors"][0], int(spec["sizes"]["scale"])
    executors = Executors(spec["workdir"])
    try:
        startup = warm_up(executor, executors, spec)
        base_rss = wl.peak_rss_mib()
        wl.chdir_fresh(spec["workdir"], "scale")
        experiment = build("scale", executors.plugin(executor), spec)
        started = time.perf_counter()
        check(experiment.run())
        elapsed = time.perf_counter() - started
        return {
            "executor": executor,
            "runner": spec["runner"],
            "replicates": replicates,
            "seconds": elapsed,
            "per_replicate_us": elapsed / replicates * 1e6,
            "base_rss_mib": base_rss,
            "peak_rss_mib": wl.peak_rss_mib(),
            "startup_seconds": startup,
        }
    finally:
        executors.close()


def _trace() -> str:
    return traceback.format_exc()[-2000:]


def main() -> None:
    spec = wl.read_spec()
    if "scale" in spec["sizes"]:
        wl.emit({"scaling": [run_scale_point(spec)], "versions": wl.versions("crystallize", "numpy", "ray")})
    else:
        wl.emit(run_workloads(spec))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
