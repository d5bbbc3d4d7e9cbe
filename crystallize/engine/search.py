"""What ``Experiment.optimize`` does around the optimizer: check what ``ask()`` proposed, name the
candidates' conditions, score them for ``tell()``, and keep the trials table (one row per candidate).

Kept apart from the experiment so the search loop there reads as ask, run, tell.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Mapping
from typing import Any

from ..constants import BASELINE_CONDITION
from ..errors import OptimizerError, ValidationError
from ..optimizers import BaseOptimizer, TrialHistory
from ..provenance import typed_value
from ..store import layout
from ..treatment import Treatment
from .fold import RunFold

logger = logging.getLogger(__name__)


def clock() -> float:
    """Wall time for a trial's ``seconds``."""
    return time.perf_counter()


def trial_conditions(
    asked: list[Treatment], trial: int, earlier: Mapping[str, Treatment | None]
) -> dict[str, Treatment | None]:
    """Condition names for one ask: the treatment's name, made unique across trials."""
    names = [t.name for t in asked]
    if len(set(names)) != len(names):
        raise ValidationError(
            f"trial {trial + 1}: ask() returned several treatments with the same name {names}; "
            "tell() reports scores by name, so names within one ask must differ"
        )
    conditions: dict[str, Treatment | None] = {}
    for treatment in asked:
        key = treatment.name
        if key in earlier or key in conditions or key == BASELINE_CONDITION:
            key = f"{treatment.name}~trial{trial}"
        layout.check_condition_name(key, "treatment name")
        conditions[key] = treatment
    return conditions


def trial_scores(
    fold: RunFold, conditions: Mapping[str, Treatment | None], metric: str, trial: int
) -> dict[str, float]:
    """The mean objective per asked treatment (by its own name); NaN, with a warning, when none was recorded."""
    means: dict[str, float] = {}
    for key, treatment in conditions.items():
        assert treatment is not None
        means[treatment.name] = mean = fold.mean(key, metric)
        if mean != mean:
            logger.warning(
                "trial %d: treatment '%s' recorded no '%s' (failed replicates: %d); its score is NaN",
                trial + 1,
                treatment.name,
                metric,
                fold.failures(key),
            )
    return means


def asked_treatments(optimizer: BaseOptimizer, trial: int, experiment: str) -> list[Treatment]:
    """What ``optimizer.ask()`` proposed: a list (or tuple) of Treatments; an empty one ends the search."""
    asked = optimizer.ask()
    kind = type(optimizer).__name__
    if not isinstance(asked, (list, tuple)):
        raise OptimizerError(
            f"Experiment '{experiment}', trial {trial + 1}: {kind}.ask() returned {type(asked).__name__}, "
            "not a list of Treatments; return a list (an empty one ends the search)."
        )
    for item in asked:
        if not isinstance(item, Treatment):
            raise OptimizerError(
                f"Experiment '{experiment}', trial {trial + 1}: {kind}.ask() returned a list holding "
                f"{type(item).__name__} {item!r:.60}; every item must be a Treatment (Treatment(name, {{key: value}}))."
            )
    return list(asked)


def check_objective_recorded(
    experiment: str, fold: RunFold, conditions: Mapping[str, Treatment | None], metric: str
) -> None:
    """Raise when no trial scored: the best treatment would otherwise be the first one asked, silently."""
    if not conditions:
        return  # nothing was asked; get_best_treatment says so
    if any(fold.mean(name, metric) == fold.mean(name, metric) for name in conditions):
        return  # at least one trial has a score (NaN != NaN)
    recorded = sorted({m for name in conditions for m in fold.condition_metrics(name).metrics})
    failed = sum(fold.failures(name) for name in conditions)
    close = difflib.get_close_matches(metric, recorded, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = f" ({failed} replicate(s) failed; see experiment.last_optimization.replicate_errors)" if failed else ""
    shown = ", ".join(f"'{m}'" for m in recorded) if recorded else "none"
    raise OptimizerError(
        f"Experiment '{experiment}': optimize() ran {len(conditions)} candidate(s) but none recorded a numeric "
        f"value of the objective metric '{metric}'{where}; the metrics recorded were: {shown}.{hint} "
        f"Record it with ctx.metrics.add('{metric}', value), or set Objective(metric=...) to a recorded metric."
    )


def start_history(optimizer: BaseOptimizer) -> list[dict[str, Any]]:
    """A fresh ``optimizer.history`` (one row per candidate, appended as its trial finishes).

    An optimizer with a ``history`` of its own (one it assigned, or a duck-typed optimizer's
    attribute) keeps it untouched: its code may read it. The rows then reach only the result."""
    history = TrialHistory()
    current = getattr(optimizer, "history", None)
    if current is not None and not isinstance(current, TrialHistory):
        logger.info(
            "%s keeps its own `history`; the trials are in experiment.last_optimization.trials_dataframe()",
            type(optimizer).__name__,
        )
        return history
    try:
        optimizer.history = history
    except (AttributeError, TypeError):  # a read-only or slotted attribute: the result only
        logger.debug("could not set %s.history", type(optimizer).__name__)
    return history


def trial_rows(
    fold: RunFold, conditions: Mapping[str, Treatment | None], metric: str, trial: int, seconds: float
) -> list[dict[str, Any]]:
    """One row per candidate of one ask. ``seconds`` is the trial's wall time, shared by (not split
    among) its candidates: they ran side by side. ``replicates`` counts the replicates that recorded
    the objective; with none, the candidate ``failed`` and its ``objective`` is None."""
    rows = []
    for key, treatment in conditions.items():
        scored = fold.condition_metrics(key).replicates.get(metric, [])
        mean = fold.mean(key, metric)
        complete = bool(scored) and mean == mean  # NaN != NaN
        params = treatment.apply_map if treatment is not None else {}
        rows.append(
            {
                "trial": trial,
                "candidate": key,
                "params": {k: typed_value(v) for k, v in params.items()},
                "objective": float(mean) if complete else None,
                "replicates": len(set(scored)),
                "seconds": seconds,
                "status": "complete" if complete else "failed",
            }
        )
    return rows


def optimization_record(optimizer: BaseOptimizer, history: list[dict[str, Any]]) -> dict[str, Any]:
    objective = optimizer.objective
    return {
        "objective": {"metric": objective.metric, "direction": getattr(objective, "direction", None)},
        "optimizer": type(optimizer).__name__,
        "trials": [dict(row) for row in history],
    }
