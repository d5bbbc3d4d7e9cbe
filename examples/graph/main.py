"""Two experiments as a graph: ``make_data`` writes a JSON artifact per replicate, ``analyse`` reads it.

``make_data`` draws noisy points on the line y = 2x (a few of them wild outliers) and stores
them as ``points.json``. ``analyse`` reads replicate i's points in its replicate i, fits the
slope by least squares, and compares the plain fit with a ``trimmed`` treatment that drops
the worst-fitting points and refits (a Welch t-test on the slope error).

Run it: ``python examples/graph/main.py`` (serial, a few seconds); ``--executor ray`` runs the
replicates as Ray tasks on a private local Ray; ``--resume`` skips what a previous run finished.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
from scipy.stats import ttest_ind

from crystallize import (
    Artifact,
    Experiment,
    ExperimentGraph,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    data_source,
    hypothesis,
    pipeline_step,
    treatment,
    verifier,
)

TRUE_SLOPE = 2.0

# Declared by make_data (outputs=[points]), read by analyse (datasource=points).
points = Artifact("points.json", loader=lambda path: json.loads(path.read_text()))


@data_source
def no_input(ctx):
    return None


@pipeline_step()
def sample_points(data, ctx, *, n: int = 60, outliers: float = 0.1):
    """Points on y = 2x with Gaussian noise; a fraction of them pushed far off the line."""
    x = np.random.uniform(0, 10, n)
    y = TRUE_SLOPE * x + np.random.normal(0, 1, n)
    wild = np.random.random(n) < outliers
    y[wild] += np.random.uniform(20, 40, wild.sum())
    points.write(ctx, json.dumps({"x": x.tolist(), "y": y.tolist()}))
    return data, {"outliers": int(wild.sum())}


@pipeline_step()
def fit_slope(data, ctx, *, trim: float = 0.0):
    """Least-squares slope; with ``trim``, drop that fraction of worst residuals and refit."""
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    slope, intercept = np.polyfit(x, y, 1)
    if trim > 0:
        residuals = np.abs(y - (slope * x + intercept))
        keep = residuals <= np.quantile(residuals, 1 - trim)
        slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return data, {"slope": float(slope), "slope_error": abs(float(slope) - TRUE_SLOPE)}


@verifier
def welch_t_test(baseline, treatment, alpha: float = 0.05):
    _stat, p_value = ttest_ind(treatment["slope_error"], baseline["slope_error"], equal_var=False)
    return {"p_value": float(p_value), "significant": bool(p_value < alpha)}


@hypothesis(verifier=welch_t_test(), metrics="slope_error")
def trimming_helps(result: dict[str, float]) -> float:
    return result.get("p_value", 1.0)


def execution_plugin(kind: str):
    if kind == "ray":
        from crystallize_ray import RayExecution

        return RayExecution()
    if kind == "serial":
        return SerialExecution()
    return ParallelExecution(max_workers=4, executor_type=kind)


def build(executor: str, replicates: int) -> ExperimentGraph:
    make_data = Experiment(
        datasource=no_input(),
        pipeline=Pipeline([sample_points()]),
        plugins=[SeedPlugin(seed=7), execution_plugin(executor)],
        outputs=[points],
        replicates=replicates,
        name="make_data",
    )
    analyse = Experiment(
        datasource=points,
        pipeline=Pipeline([fit_slope()]),
        plugins=[SeedPlugin(seed=7), execution_plugin(executor)],
        treatments=[treatment("trimmed", {"trim": 0.2})],
        hypotheses=[trimming_helps],
        replicates=replicates,
        name="analyse",
    )
    return ExperimentGraph.from_experiments([make_data, analyse])


# Module level, so `crystallize run examples/graph/main.py` finds it (nothing runs on import).
graph = build("serial", 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", default="serial", choices=["serial", "thread", "process", "ray"])
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--resume", action="store_true", help="skip experiments a previous run completed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    graph = build(args.executor, args.replicates)
    print("run order:", " -> ".join(graph.order()))
    results = graph.run(strategy="resume" if args.resume else None)

    made, analysed = results["make_data"], results["analyse"]
    print(f"make_data v{made.provenance['version']}: outliers per replicate", made.metrics.baseline.metrics["outliers"])
    for condition, metrics in analysed.metrics.conditions():
        errors = metrics.metrics["slope_error"]
        print(f"analyse {condition:>8}: mean slope error {np.mean(errors):.3f} over {len(errors)} replicates")
    print("hypothesis trimming_helps:", analysed.get_hypothesis("trimming_helps").results)
    print(
        f"analyse read make_data v{points.pinned_version}; stored under data/analyse/v{analysed.provenance['version']}"
    )


if __name__ == "__main__":
    main()
