"""optimize() → run() → apply(): search a parameter, prove the winner, use it once.

Run it: ``python examples/full_workflow/main.py`` (``--executor process`` or ``ray`` to fan out).
"""

from __future__ import annotations

import argparse
import logging
import random

from scipy.stats import ttest_ind

from crystallize import (
    Experiment,
    FrozenContext,
    GridSearchOptimizer,
    Objective,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    data_source,
    exit_step,
    hypothesis,
    pipeline_step,
    verifier,
)


@data_source
def numbers(ctx: FrozenContext) -> list[float]:
    return [0.0, 0.0, 0.0]


@pipeline_step()
def add_delta(data: list[float], ctx: FrozenContext, *, delta: float = 0.0) -> list[float]:
    return [x + delta for x in data]


@pipeline_step()
def add_noise(data: list[float], ctx: FrozenContext) -> list[float]:
    return [x + random.random() for x in data]


@pipeline_step()
def record_sum(data: list[float], ctx: FrozenContext) -> list[float]:
    ctx.metrics.add("total", sum(data))
    return data


@verifier
def welch_t_test(baseline, treatment, alpha: float = 0.05):
    _, p = ttest_ind(treatment["total"], baseline["total"], equal_var=False)
    return {"p_value": p, "significant": p < alpha}


@hypothesis(verifier=welch_t_test(), metrics="total")
def rank_by_p_value(result):
    return result.get("p_value", 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executor", default="serial", choices=["serial", "thread", "process", "ray"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.executor == "ray":
        from crystallize_ray import RayExecution

        execution = RayExecution()
    elif args.executor == "serial":
        execution = SerialExecution()
    else:
        execution = ParallelExecution(executor_type=args.executor)

    experiment = Experiment(
        datasource=numbers(),
        pipeline=Pipeline([add_delta(), add_noise(), exit_step(record_sum())]),
        plugins=[SeedPlugin(seed=42), execution],
        name="full_workflow",
    )
    search = GridSearchOptimizer({"delta": [-2.0, -1.0, 0.0, 1.0, 2.0]}, Objective("total", "minimize"))
    best = experiment.optimize(search, num_trials=5, replicates_per_trial=10)
    print("optimize() suggests:", best)

    result = experiment.run(treatments=[best], hypotheses=[rank_by_p_value], replicates=30)
    print("run() says:", result.get_hypothesis("rank_by_p_value").results)

    print("apply() gives:", experiment.apply(treatment=best, seed=0))


if __name__ == "__main__":
    main()
