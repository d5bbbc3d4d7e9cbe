"""``crystallize show`` of an ``optimize()`` run: its trials, one row per candidate, best marked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text


def param_text(value: Any) -> str:
    """A stored (typed) parameter value as a person reads it: ``2.0``, ``'adam'``, ``[1, 2]``."""
    if isinstance(value, Mapping) and set(value) == {"repr", "type"}:
        return str(value["repr"])
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"  # 2.0 stays a float, unlike 2
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _objective_text(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "\u2014"
    return f"{value:.6g}"


def best_candidate(rows: Sequence[Mapping[str, Any]], direction: Any) -> str | None:
    """The complete candidate with the best objective (the first of equals), or None."""
    best: Mapping[str, Any] | None = None
    for row in rows:
        value = row.get("objective")
        if row.get("status") != "complete" or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if best is None or (value > best["objective"] if direction == "maximize" else value < best["objective"]):
            best = row
    return str(best["candidate"]) if best is not None else None


def trials_table(optimization: Mapping[str, Any]) -> Table:
    """Trial, candidate, one column per parameter, objective, replicates, seconds, status."""
    rows: list[Mapping[str, Any]] = list(optimization.get("trials") or [])
    objective = optimization.get("objective") or {}
    metric = objective.get("metric", "objective")
    direction = objective.get("direction")
    title = f"trials ({optimization.get('optimizer', 'optimizer')}, {direction or '?'} {metric})"
    table = Table(title=title, title_justify="left", title_style="bold")
    keys = list(dict.fromkeys(k for row in rows for k in (row.get("params") or {})))
    table.add_column("trial", justify="right")
    table.add_column("candidate")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column(f"{metric} (mean)", justify="right")
    table.add_column("replicates", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("status")
    best = best_candidate(rows, direction)
    for row in rows:
        params = row.get("params") or {}
        candidate = str(row.get("candidate", "?"))
        seconds = row.get("seconds")
        failed = row.get("status") != "complete"
        table.add_row(
            str(row.get("trial", "?")),
            Text(candidate + (" (best)" if candidate == best else ""), style="bold" if candidate == best else ""),
            *(param_text(params[k]) if k in params else "\u2014" for k in keys),
            _objective_text(row.get("objective")),
            str(row.get("replicates", "?")),
            f"{seconds:.3g}" if isinstance(seconds, (int, float)) else "\u2014",
            Text(str(row.get("status", "?")), style="bold red" if failed else "green"),
        )
    if not rows:
        table.add_row("\u2014", "no candidates were asked", *([""] * (len(keys) + 4)))
    return table
