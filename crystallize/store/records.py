"""Run records: what a run set out to do, every finished replicate as it finishes, and the final summary.

``plan.json`` is written before the first task, outcome parts while the run goes
(each part an Arrow IPC file, published atomically), ``metrics.parquet`` and then
``run.json`` at the end: a version with ``run.json`` finished; one without it was
interrupted and can be resumed from its outcome parts.

This module writes and decodes the records and owns the version-folder primitives
(list, claim, prune); finding, opening, listing and resetting runs goes through
``crystallize.store.repository.RunRepository``, which builds on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
import uuid
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..engine.plan import ReplicateOutcome
from ..errors import CorruptRecordError
from . import layout
from .filesystem import Store

if TYPE_CHECKING:
    from ..results import Result

logger = logging.getLogger(__name__)


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return repr(value)


def dumps_json(value: Any) -> bytes:
    return json.dumps(value, indent=2, default=json_default, allow_nan=True).encode()


def list_versions(store: Store, experiment: str) -> list[int]:
    """Every claimed ``v<N>`` of ``experiment``, oldest first (abandoned claims included)."""
    names = store.list_dir(layout.experiment_dir(experiment))
    return sorted(v for v in (layout.parse_version(n) for n in names) if v is not None)


def claim_version(store: Store, experiment: str) -> int:
    """The next free ``v<N>``, claimed atomically: concurrent runs never share a version."""
    candidate = max(list_versions(store, experiment), default=-1) + 1
    while not store.claim(layout.version_dir(experiment, candidate)):
        candidate += 1
    return candidate


def prune_versions(store: Store, experiment: str, keep: int, protect: int | None = None) -> list[int]:
    """Delete all but the newest ``keep`` versions (``protect`` always stays); returns what was removed."""
    versions = list_versions(store, experiment)
    kept = set(versions[-keep:]) if keep > 0 else set()
    doomed = [v for v in versions if v not in kept and v != protect]
    for version in doomed:
        store.delete(layout.version_dir(experiment, version))
    return doomed


class RunRecorder:
    """Writes the records of one version; outcomes are flushed in small atomic parts."""

    def __init__(self, store: Store, experiment: str, version: int, *, flush_seconds: float = 0.2) -> None:
        self.store = store
        self.experiment = experiment
        self.version = version
        self.flush_seconds = flush_seconds
        self._buffer: list[ReplicateOutcome] = []
        self._last_flush = 0.0

    def write_plan(self, plan: dict[str, Any]) -> None:
        self.store.write_bytes(layout.run_file(self.experiment, self.version, layout.PLAN), dumps_json(plan))

    def record(self, outcome: ReplicateOutcome) -> None:
        self._buffer.append(outcome)
        now = time.monotonic()
        if now - self._last_flush >= self.flush_seconds or len(self._buffer) >= 5000:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        outcomes, self._buffer = self._buffer, []
        part = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.pkl"
        self.store.write_bytes(layout.outcome_part(self.experiment, self.version, part), encode_part(outcomes))
        self._last_flush = time.monotonic()

    def finish(self, result: Result) -> None:
        """Flush, then write ``metrics.parquet`` and, last, ``run.json`` (the mark of a finished run)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        sink = pa.BufferOutputStream()
        pq.write_table(result.to_arrow(), sink)
        self.store.write_bytes(
            layout.run_file(self.experiment, self.version, layout.METRICS), sink.getvalue().to_pybytes()
        )
        record = {
            "experiment": self.experiment,
            "version": self.version,
            "provenance": result.provenance,
            "artifacts": {c: [vars(e) for e in entries] for c, entries in result.artifacts.items()},
            "errors": {c: {str(r): vars(e) for r, e in errs.items()} for c, errs in result.errors.items()},
            "hypotheses": [
                {
                    "name": h.name,
                    "results": h.results,
                    "ranking": h.ranking,
                    "dropped_pairs": h.dropped_pairs,
                    "errors": h.errors,
                }
                for h in result.metrics.hypotheses
            ],
        }
        self.store.write_bytes(layout.run_file(self.experiment, self.version, layout.RUN_RECORD), dumps_json(record))


_PART_MAGIC = b"CRYSTALLIZE-OUTCOMES-1\n"


def encode_part(outcomes: list[ReplicateOutcome]) -> bytes:
    """Outcomes as one checksummed pickle (plain pickle when it can, cloudpickle for exotic metric values)."""
    try:
        payload = pickle.dumps(outcomes, protocol=5)
    except Exception:  # noqa: BLE001 - lambdas or local classes among metric values
        payload = cloudpickle.dumps(outcomes, protocol=5)
    return _PART_MAGIC + hashlib.sha256(payload).digest() + payload


def decode_part(blob: bytes) -> list[ReplicateOutcome]:
    start = len(_PART_MAGIC) + 32
    if not blob.startswith(_PART_MAGIC) or hashlib.sha256(blob[start:]).digest() != blob[len(_PART_MAGIC) : start]:
        raise CorruptRecordError("truncated or altered outcome record")
    return pickle.loads(blob[start:])


def read_json(store: Store, relative: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.read_bytes(relative))
    except FileNotFoundError:
        return None


def load_outcomes(store: Store, experiment: str, version: int) -> dict[tuple[str, int], ReplicateOutcome]:
    """Every recorded outcome of a version; a later record of the same task replaces an earlier one."""
    folder = f"{layout.version_dir(experiment, version)}/{layout.OUTCOMES}"
    outcomes: dict[tuple[str, int], ReplicateOutcome] = {}
    for name in store.list_dir(folder):
        if not name.startswith("part-") or not name.endswith(".pkl"):
            continue
        try:
            batch = decode_part(store.read_bytes(f"{folder}/{name}"))
        except Exception as exc:  # noqa: BLE001 - a damaged part costs its replicates a rerun, nothing more
            logger.warning("Skipping unreadable outcome record %s/%s: %s", folder, name, exc)
            continue
        for outcome in batch:
            outcomes[(outcome.condition, outcome.replicate)] = outcome
    return outcomes
