"""``crystallize show --plot``: metric distributions per condition, one panel per metric, as a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..results import Result
from .tables import condition_names, metric_names, numbers
from .targets import TargetError


def plot_run(result: Result, path: str | Path, *, dpi: int = 120) -> Path:
    """Box plot plus jittered points per condition for every numeric metric; saved as a PNG.

    The PNG's ``Description`` text records the conditions (``conditions: a, b``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import numpy as np
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise TargetError(f"--plot needs matplotlib: pip install 'crystallize-ray[plot]' ({exc})") from exc

    conditions = condition_names(result)
    panels = _numeric_panels(result, conditions)
    title = _title(result)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(4.5, 1.1 * len(conditions) + 2.0)
    figure = Figure(figsize=(width * ncols, 4.2 * nrows), layout="constrained")
    rng = np.random.default_rng(0)  # the same jitter every time: the same run gives the same picture
    for index, (metric, columns) in enumerate(panels):
        _draw_panel(figure.add_subplot(nrows, ncols, index + 1), metric, conditions, columns, rng)
    figure.suptitle(title, fontweight="bold")
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(
        target,
        format="png",
        dpi=dpi,
        metadata={"Title": title, "Description": "conditions: " + ", ".join(conditions)},
    )
    return target


def _numeric_panels(result: Result, conditions: list[str]) -> list[tuple[str, list[list[float]]]]:
    """One (metric, finite values per condition) per numeric metric; raises when there is none."""
    per_condition = dict(result.metrics.conditions())
    panels: list[tuple[str, list[list[float]]]] = []
    skipped = []
    for metric in metric_names(result):
        columns = []
        for condition in conditions:
            values = per_condition.get(condition)
            series = numbers(values.metrics.get(metric, [])) if values else []
            if series is None:
                skipped.append(metric)
                break
            columns.append([v for v in series if math.isfinite(v)])
        else:
            panels.append((metric, columns))
    if not panels:
        reason = f" (not numeric: {', '.join(skipped)})" if skipped else ""
        raise TargetError(f"nothing to plot: the run has no numeric metrics{reason}")
    return panels


def _title(result: Result) -> str:
    provenance = result.provenance
    title = f"{provenance.get('experiment', '?')} v{provenance.get('version', '?')}"
    return title + (" (interrupted)" if not provenance.get("finished", True) else "")


def _draw_panel(axes: Any, metric: str, conditions: list[str], columns: list[list[float]], rng: Any) -> None:
    """A box per condition (where it has values) and its points, jittered sideways."""
    import numpy as np

    colors = [f"C{i % 10}" for i in range(len(conditions))]
    positions = list(range(1, len(conditions) + 1))
    drawn = [(p, c) for p, c in zip(positions, columns, strict=True) if c]
    if drawn:
        boxes = axes.boxplot(
            [c for _, c in drawn],
            positions=[p for p, _ in drawn],
            widths=0.55,
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for patch, (position, _) in zip(boxes["boxes"], drawn, strict=True):
            patch.set_facecolor(colors[position - 1])
            patch.set_alpha(0.25)
    for position, column, color in zip(positions, columns, colors, strict=True):
        if not column:
            axes.annotate("no values", (position, 0.5), xycoords=("data", "axes fraction"), ha="center")
            continue
        jitter = rng.uniform(-0.18, 0.18, size=len(column))
        axes.scatter(
            np.full(len(column), position) + jitter, column, s=16, color=color, alpha=0.75, edgecolors="none", zorder=3
        )
    axes.set_xticks(positions)
    rotate = max(len(c) for c in conditions) * len(conditions) > 40
    axes.set_xticklabels(conditions, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    axes.set_xlim(0.4, len(conditions) + 0.6)
    axes.set_title(metric)
    axes.grid(axis="y", alpha=0.3)
