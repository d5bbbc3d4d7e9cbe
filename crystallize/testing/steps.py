"""The datasources, steps, plugin and hypotheses of the executor conformance suite.

A module of the installed package, so process and Ray workers import it by reference
wherever Crystallize is installed; it does not import pytest. Steps that count their
executions append to ``ctx["workdir"]/executions.log``: workers may run in other
processes, so counting needs a file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from crystallize import BasePlugin, FrozenContext, PipelineStep, data_source, hypothesis, pipeline_step, verifier
from crystallize.engine.plan import RunSpec

EXEC_LOG = "executions.log"
FAIL_FLAG = "fail.flag"  # lines "condition,replicate": those replicates of fragile_value raise


def log_execution(ctx, label: str) -> None:
    with open(Path(ctx["workdir"]) / EXEC_LOG, "a", encoding="utf-8") as log:
        log.write(f"{label},{ctx['condition']},{ctx['replicate']}\n")


def flagged(ctx) -> bool:
    path = Path(ctx["workdir"]) / FAIL_FLAG
    return path.exists() and f"{ctx['condition']},{ctx['replicate']}" in path.read_text().split()


# ---------------------------------------------------------------- datasources


@data_source
def draws(ctx):
    """Two draws from the global generators, seeded per replicate."""
    return [random.random(), float(np.random.random())]


@data_source
def ramp(ctx):
    """A different input in every replicate, so every replicate has its own cache entry."""
    return float(ctx["replicate"] + 1)


@data_source
def zero(ctx):
    """The same input in every replicate."""
    return 0.0


# ---------------------------------------------------------------- steps (part A: runs, caches, hooks)


@pipeline_step
def add_delta(data, ctx, *, delta=0.0):
    return [x + delta for x in data]


@pipeline_step
def noisy_total(data, ctx):
    py_draw = random.random()
    np_draw = float(np.random.normal())
    # the treatment's shift is scaled by a draw, so paired differences vary between replicates
    metrics = {"total": sum(data) * (1.0 + py_draw) + np_draw, "py_draw": py_draw, "np_draw": np_draw}
    return data, {**metrics, "seed": ctx["seed_used"]}


@pipeline_step
def total(data, ctx):
    return float(sum(data)), {"total": float(sum(data))}


@pipeline_step
def must_not_run(data, ctx):
    raise AssertionError("a step after the exit step ran")


@pipeline_step
def fragile_value(data, ctx):
    """Fails for the replicates listed in the fail flag; logs every execution."""
    log_execution(ctx, "fragile_value")
    if flagged(ctx):
        raise RuntimeError(f"flagged failure of {ctx['condition']}/{ctx['replicate']}")
    return data, {"value": sum(data) * (1.0 + random.random())}


@pipeline_step
def seeded_artifacts(data, ctx):
    """Artifacts whose bytes derive from the replicate seed and the global generator."""
    own = np.random.default_rng(ctx["seed_used"]).bytes(16)
    ctx.artifacts.add("seeded.bin", own + ctx["condition"].encode())
    ctx.artifacts.add("global.txt", f"{ctx['condition']}:{np.random.random()!r}:{sum(data)!r}")
    return data


@pipeline_step(cacheable=True)
def cached_scale(data, ctx, *, factor=1.0):
    """Deterministic in its input; records a metric and an artifact a hit must restore."""
    log_execution(ctx, "cached_scale")
    ctx.metrics.add("scaled", data * factor)
    ctx.artifacts.add("scaled.txt", f"{data!r}*{factor!r}")
    return data * factor


@pipeline_step
def after_scale(data, ctx):
    return data, {"after": data}


class HookStamp(BasePlugin):
    """Records, from the worker-side hooks, what each hook saw into the replicate's metrics."""

    def __init__(self) -> None:
        self.steps_seen: list[str] = []

    def before_replicate(self, experiment: RunSpec, ctx: FrozenContext) -> None:
        self.steps_seen = []
        stamp = f"{ctx['condition']}:{ctx['replicate']}:{ctx['seed_used']}:{experiment.replicates}"
        ctx.metrics.add("hook_replicate", stamp)
        ctx.metrics.add("hook_draw", float(np.random.random()))

    def before_step(self, experiment: RunSpec, step: PipelineStep) -> None:
        self.steps_seen.append(step.name)

    def after_step(self, experiment: RunSpec, step: PipelineStep, data: Any, ctx: FrozenContext) -> None:
        ctx.metrics.add("hook_after_step", f"{step.name}:{'/'.join(self.steps_seen)}:{data!r}")


@verifier
def paired_t(baseline, treatment):
    """scipy's paired t-test on the one metric the hypothesis names."""
    (metric,) = baseline
    test = stats.ttest_rel(treatment[metric], baseline[metric])
    return {"p_value": float(test.pvalue), "statistic": float(test.statistic)}


@hypothesis(verifier=paired_t(), metrics="total")
def total_shift(result):
    return result["p_value"]


@hypothesis(verifier=paired_t(), metrics="value")
def value_shift(result):
    return result["p_value"]


# ---------------------------------------------------------------- steps (part B: the harder corners)


@pipeline_step
def rng_draw(data, ctx):
    return data, {"rng": float(ctx.rng.normal())}


@pipeline_step
def append_seen(data, ctx):
    ctx["seen"].append(1)
    return data, {"n": len(ctx["seen"])}


@pipeline_step(cacheable=True)
def cached_ctx_delta(data, ctx):
    """Reads ``delta`` in its body, not as a parameter."""
    value = data + ctx.get("delta")
    return value, {"out": value}


@pipeline_step(cacheable=True)
def cached_global_normal(data, ctx):
    draw = float(np.random.normal())
    return data + draw, {"draw": draw}


@pipeline_step(cacheable=True)
def cached_rng_normal(data, ctx):
    draw = float(ctx.rng.normal())
    return data + draw, {"draw": draw}
