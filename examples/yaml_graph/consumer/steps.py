"""Consumer: calibrate the producer's readings and measure how far they land from the target."""

from __future__ import annotations

from scipy.stats import ttest_ind

from crystallize import FrozenContext, pipeline_step, verifier


@pipeline_step()
def calibrate(data: list[float], ctx: FrozenContext, *, gain: float = 1.0) -> list[float]:
    return [x * gain for x in data]


@pipeline_step()
def summarize(data: list[float], ctx: FrozenContext, *, target: float):
    """Record the mean absolute distance from ``target``."""
    return data, {"error": sum(abs(x - target) for x in data) / len(data)}


@verifier
def welch_t_test(baseline, treatment, alpha: float = 0.05):
    _stat, p_value = ttest_ind(treatment["error"], baseline["error"], equal_var=False)
    return {"p_value": float(p_value), "significant": bool(p_value < alpha)}
