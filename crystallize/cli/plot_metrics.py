"""One panel per numeric metric: the distribution per condition, the mean with its 95% interval,
n, and each treatment's adjusted p-value and effect size against the baseline.

A violin shows the shape (readable with thousands of replicates); the replicates themselves are a
jittered strip whose opacity falls as their number grows, so 2,000 points read as a density,
not a blot; the mean and its t-interval sit on top in black.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..constants import BASELINE_CONDITION
from ..results import Result
from .plot_stats import MetricStats, format_effect, format_mean, format_p, metric_stats

NOTE_FONT = 7.5
TEXT_FONT = 8.0
MAX_WIDTH = 16.0  # inches: wider figures are panned, not read
TREATMENT_COLORS = [f"C{i}" for i in range(10) if i != 7]  # C7 is the baseline's grey
DATA_SHARE = 0.74  # of the panel's height; the rest is room for the n / p_adj / effect lines


def draw_metric_panels(figure: Any, result: Result, conditions: list[str], columns: Mapping[str, Any]) -> None:
    """A grid of panels (up to three per row), one per metric in ``columns`` (metric -> condition -> values)."""
    import numpy as np

    width = max(4.8, 1.25 * len(conditions) + 2.2)
    ncols = max(1, min(3, len(columns), int(MAX_WIDTH // width)))  # many conditions: fewer panels per row
    nrows = math.ceil(len(columns) / ncols)
    figure.set_size_inches(width * ncols, 4.6 * nrows)
    rng = np.random.default_rng(0)  # the same jitter every time: the same run gives the same picture
    effects: set[str] = set()
    for index, (metric, per_condition) in enumerate(columns.items()):
        stats = metric_stats(result, metric, per_condition)
        effects.update(c.effect for c in stats.comparisons.values())
        axes = figure.add_subplot(nrows, ncols, index + 1)
        draw_metric_panel(axes, stats, conditions, per_condition, rng)
    figure.supxlabel(_legend_line(effects, width * ncols), fontsize=NOTE_FONT, color="0.3")


def draw_metric_panel(
    axes: Any, stats: MetricStats, conditions: list[str], columns: Mapping[str, Sequence[float]], rng: Any
) -> None:
    """Violin, strip and mean ± 95% CI per condition; its n, p_adj and effect above it."""
    import numpy as np

    positions = list(range(1, len(conditions) + 1))
    colors = _colors(conditions)
    shaped = [
        (p, list(columns.get(c, []))) for p, c in zip(positions, conditions, strict=True) if _has_spread(columns.get(c))
    ]
    if shaped:
        parts = axes.violinplot(
            [values for _, values in shaped],
            positions=[p for p, _ in shaped],
            widths=0.8,
            showextrema=False,
        )
        for body, (position, _) in zip(parts["bodies"], shaped, strict=True):
            body.set_facecolor(colors[position - 1])
            body.set_edgecolor(colors[position - 1])
            body.set_alpha(0.28)
    for position, condition in zip(positions, conditions, strict=True):
        values = np.asarray(columns.get(condition, []), dtype=float)
        if values.size == 0:
            axes.annotate("no values", (position, 0.4), xycoords=("data", "axes fraction"), ha="center", color="0.4")
            continue
        alpha, size = _strip_style(values.size)
        jitter = rng.uniform(-0.14, 0.14, size=values.size)
        axes.scatter(
            position + jitter, values, s=size, color=colors[position - 1], alpha=alpha, edgecolors="none", zorder=2
        )
        summary = stats.summaries[condition]
        if math.isfinite(summary.low):
            axes.errorbar(
                position,
                summary.mean,
                yerr=[[summary.mean - summary.low], [summary.high - summary.mean]],
                fmt="none",
                ecolor="black",
                elinewidth=1.6,
                capsize=5,
                capthick=1.6,
                zorder=5,
            )
        axes.plot(position, summary.mean, marker="D", markersize=5, color="black", markeredgecolor="white", zorder=6)
    _set_limits(axes, stats, columns)
    for position, condition in zip(positions, conditions, strict=True):
        _annotate(axes, position, condition, stats)
    axes.set_xticks(positions)
    rotate = max(len(c) for c in conditions) * len(conditions) > 48
    axes.set_xticklabels(conditions, rotation=25 if rotate else 0, ha="right" if rotate else "center")
    axes.set_xlim(0.4, len(conditions) + 0.6)
    axes.set_xlabel("condition")
    axes.set_ylabel(stats.metric)
    axes.set_title(stats.metric, fontweight="bold", pad=16)
    if stats.source:
        note = f"p_adj and effect vs baseline: {stats.source}"
        axes.text(0.5, 1.015, note, transform=axes.transAxes, ha="center", va="bottom", fontsize=NOTE_FONT)
    axes.grid(axis="y", alpha=0.3)


def _annotate(axes: Any, position: int, condition: str, stats: MetricStats) -> None:
    """``n=…`` for every condition; a treatment adds ``p_adj=…`` and its effect (bold when significant)."""
    summary = stats.summaries.get(condition)
    lines = [f"n={summary.n if summary else 0}"] + ([format_mean(summary)] if summary and summary.n else [])
    weight = "normal"
    comparison = stats.comparisons.get(condition)
    if comparison is not None:
        p_text = format_p(comparison.p_adjusted)
        lines.append(f"p_adj{p_text}" if p_text.startswith("<") else f"p_adj={p_text}")
        lines.append(f"{comparison.effect_label}={format_effect(comparison.effect_size)}")
        weight = "bold" if comparison.significant else "normal"
    elif condition == BASELINE_CONDITION and stats.comparisons:
        lines.append("(reference)")
    elif condition != BASELINE_CONDITION and stats.source:
        lines.append("no result")
    axes.text(
        position,
        0.985,
        "\n".join(lines),
        transform=axes.get_xaxis_transform(),
        ha="center",
        va="top",
        fontsize=TEXT_FONT,
        fontweight=weight,
        linespacing=1.25,
        bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.85", "alpha": 0.9},
    )


def _set_limits(axes: Any, stats: MetricStats, columns: Mapping[str, Sequence[float]]) -> None:
    """The data in the lower part of the panel, the annotations above it."""
    values = [v for column in columns.values() for v in column]
    values += [s.low for s in stats.summaries.values() if math.isfinite(s.low)]
    values += [s.high for s in stats.summaries.values() if math.isfinite(s.high)]
    if not values:
        return
    low, high = min(values), max(values)
    span = high - low or max(abs(high), 1.0) * 0.1
    bottom = low - 0.06 * span
    top = bottom + (high + 0.04 * span - bottom) / DATA_SHARE
    axes.set_ylim(bottom, top)


def _strip_style(n: int) -> tuple[float, float]:
    """(opacity, marker area): solid dots for a handful of replicates, a faint haze for thousands."""
    alpha = min(0.8, max(0.04, 25.0 / n))
    size = 16.0 if n <= 50 else 9.0 if n <= 300 else 4.0
    return alpha, size


def _has_spread(values: Sequence[float] | None) -> bool:
    """A violin needs at least two distinct values (its density estimate is undefined otherwise)."""
    return bool(values) and len(values) >= 2 and min(values) != max(values)  # type: ignore[arg-type]


def _colors(conditions: list[str]) -> list[str]:
    """The baseline in grey (the reference); the treatments in the default colour cycle."""
    out, index = [], 0
    for condition in conditions:
        if condition == BASELINE_CONDITION:
            out.append("0.45")
        else:
            out.append(TREATMENT_COLORS[index % len(TREATMENT_COLORS)])
            index += 1
    return out


def _legend_line(effects: set[str], width_inches: float) -> str:
    """What the marks mean, once for the whole figure, in lines as wide as the figure."""
    parts = [
        "\u25c6 mean with 95% t-interval (written: mean\u00b1half-width)",
        "violin: distribution",
        "dots: replicates",
        "bold: significant after adjustment",
    ]
    names = {
        "hedges_g": "g = Hedges' g",
        "rank_biserial": "r_rb = rank-biserial correlation",
        "mean_difference": "\u0394mean = treatment \u2212 baseline",
    }
    parts += [names[e] for e in sorted(effects) if e in names]
    return _wrap_parts(parts, max_chars=int(width_inches * CHARS_PER_INCH))


CHARS_PER_INCH = 13  # of the footer's small font: a line longer than the figure would be cut off


def _wrap_parts(parts: list[str], max_chars: int) -> str:
    """``parts`` joined by dots, broken into lines between parts so that no line is wider than the figure."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 5 + len(part) <= max_chars:
            lines[-1] += "  \u00b7  " + part
        else:
            lines.append(part)
    return "\n".join(lines)
