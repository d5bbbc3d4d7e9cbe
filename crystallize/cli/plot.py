"""``crystallize show --plot``: the figure of a run, as a PNG.

A run: one panel per numeric metric (distribution per condition, mean with 95% interval, n,
each treatment's adjusted p-value and effect size; ``plot_metrics``). An optimize run: the
objective against each parameter's value (``plot_optimize``). :func:`build_figure` makes the
matplotlib ``Figure`` (what tests inspect); :func:`plot_run` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..constants import BASELINE_CONDITION
from ..results import Result
from .plot_stats import numeric_columns
from .tables import condition_names
from .targets import TargetError


def plot_run(result: Result, path: str | Path, *, dpi: int = 120) -> Path:
    """Draw ``result`` and save it as a PNG at ``path`` (parent folders made).

    The PNG's ``Title`` is the run (``demo v0``), its ``Description`` the conditions drawn
    (``conditions: a, b``).
    """
    figure = build_figure(result)
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(
        target,
        format="png",
        dpi=dpi,
        metadata={"Title": run_title(result), "Description": "conditions: " + ", ".join(_drawn(result))},
    )
    return target


def build_figure(result: Result) -> Any:
    """The figure of ``result`` (a ``matplotlib.figure.Figure``; nothing is shown or saved)."""
    figure_class = _figure_class()
    from .plot_metrics import draw_metric_panels
    from .plot_optimize import draw_optimize_panels

    conditions = _drawn(result)
    columns = numeric_columns(result, conditions)
    figure = figure_class(layout="constrained")
    title = run_title(result)
    if result.provenance.get("mode") == "optimize":
        candidates = [c for c in conditions if c != BASELINE_CONDITION]
        subtitle = draw_optimize_panels(figure, result, candidates, columns)
        figure.suptitle(f"{title} \u00b7 {subtitle}", fontweight="bold")
    else:
        draw_metric_panels(figure, result, conditions, columns)
        figure.suptitle(title, fontweight="bold")
    return figure


def run_title(result: Result) -> str:
    """``<experiment> v<version>``, marked when the run was interrupted."""
    provenance = result.provenance
    title = f"{provenance.get('experiment', '?')} v{provenance.get('version', '?')}"
    return title + (" (interrupted)" if not provenance.get("finished", True) else "")


def _drawn(result: Result) -> list[str]:
    """The run's conditions; an optimize run's baseline only when it has values (it usually has none)."""
    conditions = condition_names(result)
    if result.provenance.get("mode") == "optimize":
        values = dict(result.metrics.conditions()).get(BASELINE_CONDITION)
        if not (values and values.metrics):
            conditions = [c for c in conditions if c != BASELINE_CONDITION]
    return conditions


def _figure_class() -> Any:
    """matplotlib's ``Figure`` (no pyplot: no display, the user's backend left alone), or an install hint."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise TargetError(f"--plot needs matplotlib: pip install 'crystallize-ray[plot]' ({exc})") from exc
    return Figure
