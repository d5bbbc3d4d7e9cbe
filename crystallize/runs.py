"""Reopening stored runs as ``Result`` objects, from their records alone."""

from __future__ import annotations

import logging
import os
from typing import Any

from .engine.fold import RunFold
from .errors import RunNotFoundError
from .results import HypothesisResult, Result
from .store import layout
from .store.repository import RunRepository, parse_location

logger = logging.getLogger(__name__)


def load_run(location: str | os.PathLike[str]) -> Result:
    """The ``Result`` of a stored run: ``data/basic/v0``, ``s3://bucket/data/basic/v3``, or
    ``data/basic`` for the latest version. Works for finished and interrupted runs alike
    (an interrupted one has no hypothesis results and ``provenance["finished"]`` is False).

    Only records are read, never code: outcome parts are Arrow and JSON, checked against their
    checksum and signature first. A damaged run still loads from what can be read, with
    ``provenance["damaged"]`` naming each damaged or missing file (a warning each, too);
    an unreadable ``plan.json`` raises ``CorruptRecordError`` naming it."""
    where = parse_location(location)
    repository = RunRepository(where.store())
    experiment, version = where.experiment, where.version
    if version is None:
        version = repository.latest(experiment, require="claim")
        if version is None:
            raise RunNotFoundError(f"no runs of '{experiment}' under {repository.store.location}")
    return open_result(repository, experiment, version)


def open_result(repository: RunRepository, experiment: str, version: int) -> Result:
    """:func:`load_run` of a version already located in a repository (no path to build or parse)."""
    run = repository.open(experiment, version)
    if run is None:
        raise RunNotFoundError(f"{repository.uri(experiment, version)} has no plan.json: not a run")
    plan, record, outcomes = run.plan, run.record, run.outcomes
    conditions = list(plan.get("conditions") or sorted({c for c, _ in outcomes}))
    fold = RunFold(conditions, log_failures=False)
    for outcome in outcomes.values():
        if outcome.condition not in conditions:
            fold.add_conditions([outcome.condition])
        fold.add(outcome)
    provenance: dict[str, Any] = dict(record["provenance"]) if record else {**plan, "version": version}
    provenance["finished"] = record is not None
    damage = run.damage
    if damage:
        # Counts and metrics come from the outcome parts that could be read: a lost part shows as 19/20.
        provenance["damaged"] = [str(d) for d in damage]
        warned = {f"{layout.OUTCOMES}/{name}" for name in run.read.skipped}  # reading them warned already
        for item in damage:
            if item.file not in warned:
                logger.warning("%s: %s", repository.uri(experiment, version), item)
    result = fold.build_result([], int(plan["replicates"]), provenance)
    if record:
        result.metrics.hypotheses = [_hypothesis_from_record(h) for h in record.get("hypotheses", [])]
    return result


def _hypothesis_from_record(record: dict[str, Any]) -> HypothesisResult:
    """JSON turned the ranking's (name, score) tuples into lists; give them back as a live run has them."""
    ranking = dict(record.get("ranking", {}))
    ranking["ranked"] = [tuple(item) for item in ranking.get("ranked", [])]
    return HypothesisResult(**{**record, "ranking": ranking})


def finished_metrics(
    repository: RunRepository, experiment: str, version: int
) -> dict[str, dict[str, list[Any]]] | None:
    """``{condition: {metric: values in replicate order}}`` of a finished run, from its outcome parts;
    None when the version holds no finished run (nothing claimed there, or interrupted).

    Read from the records, as :func:`load_run` reads them (never from the 0.27 files written beside
    them): conditions in the plan's order, failed replicates left out; damage is logged as a warning.
    """
    run = repository.open(experiment, version)
    if run is None or not run.finished:
        return None
    outcomes = run.outcomes
    conditions = list(run.plan.get("conditions") or sorted({c for c, _ in outcomes}))
    fold = RunFold(conditions, log_failures=False)
    for outcome in outcomes.values():
        if outcome.condition not in fold.conditions:
            fold.add_conditions([outcome.condition])
        fold.add(outcome)
    warned = {f"{layout.OUTCOMES}/{name}" for name in run.read.skipped}
    for item in run.damage:
        if item.file not in warned:
            logger.warning("%s: %s", repository.uri(experiment, version), item)
    return {condition: fold.condition_metrics(condition).metrics for condition in fold.conditions}
