"""The figure of an optimize run: the objective (mean with its 95% interval per candidate)
against each parameter's value, one panel per parameter, the baseline as a reference line.

Candidates are placed by what they tried (``delta = -2.0``), not by their names
(``grid_0``): a numeric parameter gets a numeric axis, anything else a categorical one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..constants import BASELINE_CONDITION
from ..provenance import treatment_params, value_from_repr
from ..results import Result
from .tables import Summary, summarize

MAX_LABELLED_TICKS = 12
MAX_COLUMNS = 3  # parameters per row of panels


def optimize_metrics(result: Result, columns: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The metric(s) to draw and the search direction when known.

    The recorded objective when the run names it; else the only numeric metric; else each one.
    """
    objective = (result.provenance.get("optimization") or {}).get("objective") or {}
    metric, direction = objective.get("metric"), objective.get("direction")
    direction = direction if direction in ("minimize", "maximize") else None
    if isinstance(metric, str) and metric in columns:
        return [metric], direction
    return list(columns), direction if len(columns) == 1 else None


def candidate_params(result: Result, candidates: Sequence[str]) -> dict[str, dict[str, Any]]:
    """candidate -> {parameter: value}, values typed (``provenance.treatment_params``: runs recorded
    before parameters kept their types stored reprs, read back; in a typed run a string stays the
    string the user gave). A candidate the record lacks falls back to its row of the trials table."""
    recorded = treatment_params(result.provenance)
    trials = (result.provenance.get("optimization") or {}).get("trials") or []
    from_trials = {row.get("candidate"): row.get("params") or {} for row in trials if isinstance(row, Mapping)}
    out: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        params = recorded.get(candidate)
        if not isinstance(params, Mapping):
            params = from_trials.get(candidate)
        if isinstance(params, Mapping):
            out[candidate] = {str(key): parse_value(value, typed=True) for key, value in params.items()}
    return out


def parse_value(value: Any, *, typed: bool = False) -> Any:
    """A recorded parameter value as an axis shows it: a repr string of an older record
    (``typed=False``) read back (``"-2.0"`` → -2.0); ``{"repr": ..., "type": ...}`` (a value JSON
    cannot type) as its repr; typed values pass through."""
    if isinstance(value, Mapping) and "repr" in value:
        return str(value["repr"])
    return value if typed else value_from_repr(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def draw_optimize_panels(
    figure: Any,
    result: Result,
    candidates: list[str],
    columns: Mapping[str, Mapping[str, Sequence[float]]],
) -> str:
    """One row per drawn metric, one panel per parameter; returns the figure's subtitle."""
    metrics, direction = optimize_metrics(result, columns)
    params = candidate_params(result, candidates)
    names = [key for candidate in candidates for key in params.get(candidate, {})]
    keys = list(dict.fromkeys(names)) or ["candidate"]
    if not params:  # nothing recorded about the candidates: place them by name
        params = {candidate: {"candidate": candidate} for candidate in candidates}
    ncols = min(MAX_COLUMNS, len(keys))
    rows_per_metric = math.ceil(len(keys) / ncols)
    figure.set_size_inches(max(6.4, 5.2 * ncols), 4.6 * len(metrics) * rows_per_metric)
    for row, metric in enumerate(metrics):
        summaries = {c: summarize(list(columns[metric].get(c, []))) for c in candidates}
        baseline = columns[metric].get(BASELINE_CONDITION) or []
        for column, key in enumerate(keys):
            index = row * rows_per_metric * ncols + column + 1
            axes = figure.add_subplot(len(metrics) * rows_per_metric, ncols, index)
            _draw_panel(
                axes,
                metric,
                key,
                {c: params[c][key] for c in candidates if key in params.get(c, {})},
                _others(params, key),
                summaries,
                columns[metric],
                summarize(list(baseline)) if baseline else None,
                direction,
            )
    what = metrics[0] if len(metrics) == 1 else ", ".join(metrics)
    goal = f" ({direction})" if direction else ""
    return f"optimize: {what}{goal} against each parameter"


def _others(params: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, str]:
    """candidate -> its other parameters (``opt=adam``): the series a panel's candidates fall into."""
    return {
        candidate: ", ".join(f"{k}={_value_text(v)}" for k, v in values.items() if k != key)
        for candidate, values in params.items()
    }


def _draw_panel(
    axes: Any,
    metric: str,
    key: str,
    values: Mapping[str, Any],
    others: Mapping[str, str],
    summaries: Mapping[str, Summary],
    columns: Mapping[str, Sequence[float]],
    baseline: Summary | None,
    direction: str | None,
) -> None:
    """Mean ± 95% CI of ``metric`` per candidate at x = its value of ``key``; its replicates just left of it."""
    import numpy as np

    drawn = [c for c in values if summaries[c].n > 0]
    numeric = bool(drawn) and all(is_number(values[c]) for c in drawn)
    if numeric:
        xs = {c: float(values[c]) for c in drawn}
        categories: list[str] = []
    else:
        categories = list(dict.fromkeys(_label(values[c]) for c in drawn))
        xs = {c: float(categories.index(_label(values[c]))) for c in drawn}
    series = list(dict.fromkeys(others.get(c, "") for c in drawn))
    colored = 1 < len(series) <= 10
    color_of = {name: f"C{i}" if colored else "black" for i, name in enumerate(series)}
    offsets = _dodged(xs)
    best = _best(drawn, summaries, direction)
    for candidate in drawn:
        x, summary = xs[candidate], summaries[candidate]
        color = color_of[others.get(candidate, "")]
        at = _shifted(axes, offsets[candidate])
        replicates = np.asarray(columns.get(candidate, []), dtype=float)
        alpha = min(0.6, max(0.04, 12.0 / max(replicates.size, 1)))
        axes.scatter(
            np.full(replicates.size, x),
            replicates,
            s=9,
            color=color if colored else "C0",
            alpha=alpha,
            edgecolors="none",
            transform=_shifted(axes, offsets[candidate] - 8.0),
        )
        if math.isfinite(summary.low):
            axes.errorbar(
                x,
                summary.mean,
                yerr=[[summary.mean - summary.low], [summary.high - summary.mean]],
                fmt="none",
                ecolor=color,
                elinewidth=1.5,
                capsize=4,
                zorder=4,
                transform=at,
            )
        axes.plot(
            x, summary.mean, marker="o", markersize=6, color=color, markeredgecolor="white", zorder=5, transform=at
        )
        if candidate == best:
            axes.plot(
                x,
                summary.mean,
                marker="*",
                markersize=16,
                color="gold",
                markeredgecolor="black",
                linestyle="none",
                zorder=6,
                transform=at,
                label=f"best: {best} ({_params_text(values, others, best, key)})",
            )
    for name in series:
        members = sorted((c for c in drawn if others.get(c, "") == name), key=lambda c: xs[c])
        if numeric and len(members) > 1 and len({xs[c] for c in members}) == len(members):
            axes.plot(
                [xs[c] for c in members],
                [summaries[c].mean for c in members],
                color=color_of[name],
                lw=1,
                alpha=0.5,
                transform=_shifted(axes, offsets[members[0]]) if colored else axes.transData,
                label=name if colored else None,
            )
        elif colored:
            axes.plot([], [], color=color_of[name], marker="o", linestyle="none", label=name)
    if baseline is not None and baseline.n > 0:
        axes.axhline(baseline.mean, color="0.35", linestyle="--", lw=1.2, label=f"baseline mean (n={baseline.n})")
        if math.isfinite(baseline.low):
            axes.axhspan(baseline.low, baseline.high, color="0.5", alpha=0.15, lw=0, label="baseline 95% CI")
    _set_x_axis(axes, xs, numeric, categories)
    _set_y_limits(axes, [columns.get(c, []) for c in drawn], [summaries[c] for c in drawn], baseline)
    if best is not None or baseline is not None or colored:
        axes.legend(fontsize=7.5, loc="best", framealpha=0.9)
    sizes = sorted({summaries[c].n for c in drawn})
    n_text = f"n={sizes[0]}" if len(sizes) == 1 else f"n={sizes[0]}\u2013{sizes[-1]}" if sizes else "n=0"
    note = f"{n_text} replicates per candidate \u00b7 dots: replicates \u00b7 \u25cf mean with 95% t-interval"
    axes.set_title(f"{metric} vs {key}", fontweight="bold", pad=14)
    axes.text(0.5, 1.012, note, transform=axes.transAxes, ha="center", va="bottom", fontsize=7.5)
    axes.set_xlabel(key)
    axes.set_ylabel(f"{metric} (mean \u00b1 95% CI)")
    axes.grid(alpha=0.3)


def _set_y_limits(
    axes: Any, replicates: Sequence[Sequence[float]], summaries: Sequence[Summary], baseline: Summary | None
) -> None:
    """Limits by hand: marks drawn with a sideways offset do not take part in autoscaling."""
    values = [v for column in replicates for v in column]
    for summary in [*summaries, *([baseline] if baseline is not None else [])]:
        values += [v for v in (summary.mean, summary.low, summary.high) if math.isfinite(v)]
    if not values:
        return
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) or max(abs(high), 1.0) * 0.05
    axes.set_ylim(low - pad, high + pad * 2.5)  # room at the top for the legend


def _shifted(axes: Any, points: float) -> Any:
    """Data coordinates moved sideways by ``points`` (the same on linear, log and categorical axes)."""
    from matplotlib.transforms import ScaledTranslation

    return axes.transData + ScaledTranslation(points / 72.0, 0.0, axes.figure.dpi_scale_trans)


def _params_text(values: Mapping[str, Any], others: Mapping[str, str], candidate: str, key: str) -> str:
    text = f"{key}={_value_text(values[candidate])}"
    return f"{text}, {others[candidate]}" if others.get(candidate) else text


def _value_text(value: Any) -> str:
    return _tick(value) if is_number(value) else _label(value)


def _tick(value: float) -> str:
    return f"{value:g}".replace("-", "\u2212")


def _set_x_axis(axes: Any, xs: Mapping[str, float], numeric: bool, categories: list[str]) -> None:
    """Ticks at the values tried (a log axis when positive numbers span two decades or more)."""
    from matplotlib.ticker import NullLocator

    if not numeric:
        axes.set_xticks(range(len(categories)))
        axes.set_xticklabels(categories, rotation=25 if sum(map(len, categories)) > 40 else 0)
        axes.set_xlim(-0.6, len(categories) - 0.4)
        return
    tried = sorted(set(xs.values()))
    if tried and tried[0] > 0 and tried[-1] / tried[0] >= 100:
        axes.set_xscale("log")
        axes.xaxis.set_minor_locator(NullLocator())
    if len(tried) <= MAX_LABELLED_TICKS:
        axes.set_xticks(tried)
        axes.set_xticklabels([_tick(v) for v in tried])
    if not tried:
        return
    if axes.get_xscale() == "log":
        ratio = (tried[-1] / tried[0]) ** 0.08
        axes.set_xlim(tried[0] / ratio, tried[-1] * ratio)
        return
    pad = 0.08 * (tried[-1] - tried[0]) or abs(tried[0]) * 0.5 or 1.0
    axes.set_xlim(tried[0] - pad, tried[-1] + pad)


def _dodged(xs: Mapping[str, float]) -> dict[str, float]:
    """Sideways offsets in points: candidates that share this value (they differ in another) side by side."""
    groups: dict[float, list[str]] = {}
    for candidate, x in xs.items():
        groups.setdefault(x, []).append(candidate)
    out = {}
    for members in groups.values():
        for index, candidate in enumerate(members):
            out[candidate] = (index - (len(members) - 1) / 2) * 16.0
    return out


def _best(drawn: Sequence[str], summaries: Mapping[str, Summary], direction: str | None) -> str | None:
    """The candidate with the best mean, when the direction is known."""
    scored = [c for c in drawn if math.isfinite(summaries[c].mean)]
    if direction is None or not scored:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(scored, key=lambda c: sign * summaries[c].mean)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
