"""The experiment of "Building Your First Experiment": a baseline, one treatment, a Welch t-test.

Run it: ``python examples/minimal_experiment/main.py``: replicates run as Ray tasks on a
private local Ray started for you (``--executor thread|process|serial`` to compare;
``RAY_ADDRESS=ray://host:10001`` to use a cluster).
"""

from __future__ import annotations

import argparse
import logging

from scipy.stats import ttest_ind

from crystallize import (
    Experiment,
    FrozenContext,
    ParallelExecution,
    SeedPlugin,
    SerialExecution,
    data_source,
    hypothesis,
    pipeline_step,
    treatment,
    verifier,
)


@data_source
def fetch_numbers(ctx: FrozenContext) -> list[float]:
    """Three noisy measurements around 0: ``ctx.rng`` is seeded per replicate from the root seed
    (``SeedPlugin(seed=42)`` below), so reruns, on any executor, draw the same."""
    return [float(x) for x in ctx.rng.normal(0.0, 1.0, size=3)]


@pipeline_step()
def add_delta(data: list[float], ctx: FrozenContext, *, delta: float = 0.0) -> list[float]:
    """Inject a configurable delta (supplied by treatments or defaults)."""
    return [x + delta for x in data]


@pipeline_step()
def summarize(data: list[float], ctx: FrozenContext):
    """Record the total while preserving the data for downstream steps."""
    return data, {"total": sum(data)}


boost_total = treatment("boost_total", {"delta": 10.0})


@verifier
def welch_t_test(baseline, treatment, alpha: float = 0.05):
    _stat, p_value = ttest_ind(treatment["total"], baseline["total"], equal_var=False)
    return {"p_value": float(p_value), "significant": bool(p_value < alpha)}  # plain numbers, not NumPy scalars


@hypothesis(verifier=welch_t_test(), metrics="total")
def order_by_p_value(result: dict[str, float]) -> float:
    return result.get("p_value", 1.0)


def execution_plugin(kind: str):
    if kind == "ray":
        from crystallize_ray import RayExecution

        return RayExecution()
    if kind == "serial":
        return SerialExecution()
    return ParallelExecution(max_workers=4, executor_type=kind)


def build_experiment(kind: str = "ray", replicates: int = 12) -> Experiment:
    return (
        Experiment.builder("basic")
        .datasource(fetch_numbers())
        .add_step(add_delta())
        .add_step(summarize())
        .plugins([execution_plugin(kind), SeedPlugin(seed=42)])  # the same numbers on every run and executor
        .treatments([boost_total()])
        .hypotheses([order_by_p_value])
        .replicates(replicates)
        .build()
    )


# Module level, so `crystallize run examples/minimal_experiment/main.py` finds it (nothing runs on import).
experiment = build_experiment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executor", default="ray", choices=["serial", "thread", "process", "ray"])
    parser.add_argument("--replicates", type=int, default=12)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    result = build_experiment(args.executor, args.replicates).run()
    for name, metrics in (
        ("baseline", result.metrics.baseline),
        ("boost_total", result.metrics.treatments["boost_total"]),
    ):
        totals = metrics.metrics["total"]
        print(
            f"{name} total: mean {sum(totals) / len(totals):.2f} over {len(totals)} replicates:",
            [round(t, 2) + 0.0 for t in totals],
        )
    comparison = result.get_hypothesis("order_by_p_value").results["boost_total"]
    print(f"boost_total vs baseline: p = {comparison['p_value']:.3g}, significant: {comparison['significant']}")
    print("stored under:", f"data/basic/v{result.provenance['version']}")


if __name__ == "__main__":
    main()
