"""Reopening stored runs as ``Result`` objects, from their records alone."""

from __future__ import annotations

import os
from typing import Any

from .engine.fold import RunFold
from .results import HypothesisResult, Result
from .store import layout
from .store.filesystem import Store
from .store.locations import absolute
from .store.records import list_versions, load_outcomes, read_json


def _split(location: str) -> tuple[str, str, int | None]:
    """``root/experiment/vN`` -> (root, experiment, N); ``root/experiment`` -> (root, experiment, None)."""
    text = location.rstrip("/")
    head, _, last = text.rpartition("/")
    version = layout.parse_version(last)
    if version is None:
        root, _, experiment = text.rpartition("/")
        return root or ".", experiment, None
    root, _, experiment = head.rpartition("/")
    return root or ".", experiment, version


def load_run(location: str | os.PathLike[str]) -> Result:
    """The ``Result`` of a stored run: ``data/basic/v0``, ``s3://bucket/data/basic/v3``, or
    ``data/basic`` for the latest version. Works for finished and interrupted runs alike
    (an interrupted one has no hypothesis results and ``provenance["finished"]`` is False)."""
    text, _, query = os.fspath(location).partition("?")  # s3://b/p/exp/v0?endpoint_override=...
    root, experiment, version = _split(text)
    store = Store(absolute(root) + (f"?{query}" if query else ""))
    if version is None:
        versions = list_versions(store, experiment)
        if not versions:
            raise FileNotFoundError(f"no runs of '{experiment}' under {store.location}")
        version = versions[-1]
    plan = read_json(store, layout.run_file(experiment, version, layout.PLAN))
    if plan is None:
        raise FileNotFoundError(f"{store.uri(layout.version_dir(experiment, version))} has no plan.json: not a run")
    record = read_json(store, layout.run_file(experiment, version, layout.RUN_RECORD))
    outcomes = load_outcomes(store, experiment, version)
    conditions = list(plan.get("conditions") or sorted({c for c, _ in outcomes}))
    fold = RunFold(conditions, log_failures=False)
    for outcome in outcomes.values():
        if outcome.condition not in conditions:
            fold.add_conditions([outcome.condition])
        fold.add(outcome)
    provenance: dict[str, Any] = dict(record["provenance"]) if record else {**plan, "version": version}
    provenance["finished"] = record is not None
    result = fold.build_result([], int(plan["replicates"]), provenance)
    if record:
        result.metrics.hypotheses = [_hypothesis_from_record(h) for h in record.get("hypotheses", [])]
    return result


def _hypothesis_from_record(record: dict[str, Any]) -> HypothesisResult:
    """JSON turned the ranking's (name, score) tuples into lists; give them back as a live run has them."""
    ranking = dict(record.get("ranking", {}))
    ranking["ranked"] = [tuple(item) for item in ranking.get("ranked", [])]
    return HypothesisResult(**{**record, "ranking": ranking})
