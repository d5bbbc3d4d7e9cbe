"""The numbers a plot prints: each condition's mean with its 95% interval, and each treatment's
adjusted p-value and effect size against the baseline.

A hypothesis the user declared for the metric is preferred (its test and its adjustment are
what the run concluded); otherwise every treatment gets Welch's t-test against the baseline,
Holm-adjusted over the treatments, so the figure never shows an unadjusted p-value.
No matplotlib here: the figures' modules draw what this one computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..constants import BASELINE_CONDITION
from ..results import HypothesisResult, Result
from .tables import Summary, metric_names, numbers, summarize
from .targets import TargetError

WELCH_SOURCE = "Welch t, Holm-adjusted"

# How the contract's test and adjustment names read on a figure.
TEST_NAMES = {
    "welch_t": "Welch t",
    "paired_t": "paired t",
    "mann_whitney": "Mann\u2013Whitney U",
    "wilcoxon": "Wilcoxon signed-rank",
    "permutation": "permutation test",
    "bootstrap_ci": "bootstrap CI",
}
ADJUSTMENT_NAMES = {"holm": "Holm", "bh": "Benjamini\u2013Hochberg", "none": "not"}

# Short labels for the contract's effect names; anything else is shown by its own name.
EFFECT_LABELS = {"hedges_g": "g", "rank_biserial": "r_rb", "mean_difference": "\u0394mean"}


@dataclass(frozen=True)
class Comparison:
    """One treatment against the baseline, for one metric (NaN where not computable)."""

    treatment: str
    p_adjusted: float
    effect: str
    effect_size: float
    significant: bool
    note: str = ""

    @property
    def effect_label(self) -> str:
        return EFFECT_LABELS.get(self.effect, self.effect or "effect")


@dataclass(frozen=True)
class MetricStats:
    """What one metric's panel prints: a summary per condition, comparisons, and their source."""

    metric: str
    summaries: dict[str, Summary]
    comparisons: dict[str, Comparison]
    source: str


def numeric_columns(result: Result, conditions: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """metric -> condition -> its finite values, for every metric whose values are all numbers.

    Raises ``TargetError`` when the run has no numeric metric: there is nothing to draw.
    """
    per_condition = dict(result.metrics.conditions())
    out: dict[str, dict[str, list[float]]] = {}
    skipped = []
    for metric in metric_names(result):
        columns: dict[str, list[float]] = {}
        for condition in conditions:
            values = per_condition.get(condition)
            series = numbers(values.metrics.get(metric, [])) if values else []
            if series is None:
                skipped.append(metric)
                break
            columns[condition] = [v for v in series if math.isfinite(v)]
        else:
            out[metric] = columns
    if not out:
        reason = f" (not numeric: {', '.join(skipped)})" if skipped else ""
        raise TargetError(f"nothing to plot: the run has no numeric metrics{reason}")
    return out


def metric_stats(result: Result, metric: str, columns: Mapping[str, Sequence[float]]) -> MetricStats:
    """The summaries of ``columns`` (condition -> finite values) and the treatments' comparisons."""
    summaries = {condition: summarize(list(values)) for condition, values in columns.items()}
    treatments = [c for c in columns if c != BASELINE_CONDITION]
    if BASELINE_CONDITION not in columns or not treatments:
        return MetricStats(metric, summaries, {}, "")
    declared = _from_hypotheses(result.metrics.hypotheses, metric, treatments)
    if declared is not None:
        comparisons, source = declared
        return MetricStats(metric, summaries, comparisons, source)
    baseline = list(columns[BASELINE_CONDITION])
    return MetricStats(metric, summaries, _welch_holm(baseline, columns, treatments), WELCH_SOURCE)


def _from_hypotheses(
    hypotheses: Sequence[HypothesisResult], metric: str, treatments: Sequence[str]
) -> tuple[dict[str, Comparison], str] | None:
    """The first hypothesis whose results for ``metric`` carry an adjusted p-value and an effect size."""
    for hypothesis in hypotheses:
        found: dict[str, Mapping[str, Any]] = {}
        for treatment in treatments:
            entry = _entry_for(hypothesis.results.get(treatment), metric)
            if entry is not None:
                found[treatment] = entry
        if not found:
            continue
        comparisons = {name: _comparison(name, entry) for name, entry in found.items()}
        sample = next(iter(found.values()))
        test = sample.get("test")
        adjustment = sample.get("adjustment")
        adjusted = f"{ADJUSTMENT_NAMES.get(str(adjustment), adjustment)}-adjusted" if adjustment else None
        detail = ", ".join(str(part) for part in (TEST_NAMES.get(str(test), test), adjusted) if part)
        return comparisons, f"hypothesis '{hypothesis.name}'" + (f" ({detail})" if detail else "")
    return None


def _entry_for(output: Any, metric: str) -> Mapping[str, Any] | None:
    """The verifier output (one mapping, or one per metric group) that is about ``metric``."""
    entries = output if isinstance(output, Sequence) and not isinstance(output, (str, bytes, Mapping)) else [output]
    for entry in entries:
        if (
            isinstance(entry, Mapping)
            and entry.get("metric") == metric
            and "p_value_adjusted" in entry
            and "effect_size" in entry
        ):
            return entry
    return None


def _comparison(treatment: str, entry: Mapping[str, Any]) -> Comparison:
    p_adjusted = _number(entry.get("p_value_adjusted"))
    significant = entry.get("significant_adjusted")
    if not isinstance(significant, bool):
        alpha = _number(entry.get("alpha"))
        significant = p_adjusted < (alpha if math.isfinite(alpha) else 0.05)
    return Comparison(
        treatment,
        p_adjusted,
        str(entry.get("effect") or "effect"),
        _number(entry.get("effect_size")),
        bool(significant),
        str(entry.get("note") or ""),
    )


def _welch_holm(
    baseline: Sequence[float], columns: Mapping[str, Sequence[float]], treatments: Sequence[str]
) -> dict[str, Comparison]:
    """Welch's t for each treatment against the baseline, p-values Holm-adjusted over the treatments."""
    from ..stats.adjust import adjust_p_values
    from ..stats.tests import welch_t

    results = {name: welch_t(baseline, list(columns[name])) for name in treatments}
    adjusted = adjust_p_values([_number(r.get("p_value")) for r in results.values()], method="holm")
    out = {}
    for (name, result), p_adjusted in zip(results.items(), adjusted, strict=True):
        alpha = _number(result.get("alpha"))
        out[name] = Comparison(
            name,
            p_adjusted,
            str(result.get("effect") or "hedges_g"),
            _number(result.get("effect_size")),
            bool(p_adjusted < (alpha if math.isfinite(alpha) else 0.05)),
            str(result.get("note") or ""),
        )
    return out


def _number(value: Any) -> float:
    """A float, NaN for anything that is not a real number (None, a string, a bool)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_p(value: float) -> str:
    """A p-value as people read it: two significant digits, ``<0.001`` below that, a dash when NaN."""
    if not math.isfinite(value):
        return "\u2014"
    if value < 0.001:
        return "<0.001"
    return f"{value:.2g}"


def format_mean(summary: Summary) -> str:
    """``0.8299±0.0018``: the mean and the half-width of its 95% t-interval (readable when the bar is not)."""
    if summary.n == 0 or not math.isfinite(summary.mean):
        return "mean \u2014"
    if not math.isfinite(summary.low):
        return f"{summary.mean:.4g}"
    return f"{summary.mean:.4g}\u00b1{(summary.high - summary.low) / 2:.2g}"


def format_effect(value: float) -> str:
    """An effect size with its sign, a dash when NaN."""
    if not math.isfinite(value):
        return "\u2014"
    return f"{value:+.2f}" if abs(value) < 100 else f"{value:+.3g}"
