"""Hypotheses: a statistical verifier per treatment, and a ranking across treatments."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import MissingMetricError
from .stats.adjust import check_method

MetricSpec = str | Sequence[str] | Sequence[Sequence[str]] | None
Verifier = Callable[[Mapping[str, Sequence[Any]], Mapping[str, Sequence[Any]]], Mapping[str, Any]]


def rank_by_p_value(result: Mapping[str, Any]) -> float:
    """Default ranker: lower p-value ranks first (with several metric groups, the lowest group's)."""
    if not isinstance(result, Mapping) and isinstance(result, Sequence):
        return min((rank_by_p_value(item) for item in result), default=1.0)
    return float(result.get("p_value", 1.0))


class Hypothesis:
    """Runs ``verifier(baseline_samples, treatment_samples)`` for every treatment and ranks them.

    ``metrics`` is one name, a list of names (one verifier call sees them all), or a
    list of lists (one verifier call per group; the result is then a list).
    ``adjust`` ("holm", "bh" or "none") adds ``p_value_adjusted`` and ``significant_adjusted``
    to each treatment's result, adjusted across the treatments for multiple comparisons.
    """

    def __init__(
        self,
        verifier: Verifier,
        metrics: MetricSpec = None,
        ranker: Callable[[Any], float] | None = None,
        name: str | None = None,
        adjust: str = "holm",
    ) -> None:
        self.verifier = verifier
        self.adjust = check_method(adjust)
        self.metrics_spec = metrics
        self.ranker = ranker or rank_by_p_value
        self.name = name or getattr(ranker, "__name__", None) or "hypothesis"

    def metric_groups(self, available: Sequence[str]) -> list[list[str]]:
        spec = self.metrics_spec
        if spec is None:
            return [list(available)]
        if isinstance(spec, str):
            return [[spec]]
        items: list[Any] = list(spec)  # names, or groups of names
        if items and all(isinstance(g, Sequence) and not isinstance(g, (str, bytes)) for g in items):
            return [list(g) for g in items]
        return [list(items)]

    @property
    def metric_names(self) -> list[str]:
        return sorted({m for group in self.metric_groups([]) for m in group})

    def verify(
        self,
        baseline_metrics: Mapping[str, Sequence[Any]],
        treatment_metrics: Mapping[str, Sequence[Any]],
        *,
        treatment_name: str | None = None,
    ) -> Any:
        """The verifier's output; a list of outputs when there are several metric groups."""
        outputs = []
        for group in self.metric_groups(list(baseline_metrics)):
            baseline: dict[str, Sequence[Any]] = {}
            treatment: dict[str, Sequence[Any]] = {}
            for metric in group:
                if metric not in baseline_metrics:
                    raise MissingMetricError(metric, "baseline")
                if metric not in treatment_metrics:
                    raise MissingMetricError(metric, treatment_name)
                baseline[metric] = baseline_metrics[metric]
                treatment[metric] = treatment_metrics[metric]
            outputs.append(self.verifier(baseline, treatment))
        return outputs[0] if len(outputs) == 1 else outputs

    def rank_treatments(self, verifier_results: Mapping[str, Any]) -> dict[str, Any]:
        """``{"best": name, "ranked": [(name, score), ...]}``, lowest score first."""
        scores = {name: self.ranker(result) for name, result in verifier_results.items()}
        ranked = sorted(scores.items(), key=_nan_last)
        return {"best": ranked[0][0] if ranked else None, "ranked": ranked}

    def __repr__(self) -> str:
        return f"Hypothesis({self.name!r}, metrics={self.metrics_spec!r})"


def _nan_last(item: tuple[str, Any]) -> tuple[bool, Any]:
    """Sort key of a (treatment, score) pair: a NaN score (a test that could not be computed) ranks
    after every number; Python's sort is undefined on NaN keys, so it could otherwise rank first."""
    score = item[1]
    missing = isinstance(score, float) and math.isnan(score)
    return missing, 0.0 if missing else score
