"""Run records: what a run set out to do, every finished replicate as it finishes, and the final summary.

A version folder holds (see :mod:`crystallize.store.layout`):

``plan.json``
    Written before the first task: what the run set out to do (JSON).
``outcomes/part-<ns>-<hex>.arrow``
    Finished replicates, flushed in small parts while the run goes, each published
    atomically. A part is ``MAGIC | header length | header JSON | Arrow IPC stream``:
    the stream has a fixed schema, one row per outcome (condition, replicate, seed as
    decimal text, seconds, the error fields, steps, artifacts, reads, and each metric's
    values as JSON text in which tuples, non-string dict keys, NumPy scalars and NumPy
    arrays are tagged so they come back as the same types); the header carries the
    SHA-256 of header and body and an HMAC-SHA256 with the signing key
    (:func:`crystallize.store.locations.cache_signing_key`). Both are checked before
    anything is decoded, and decoding is Arrow and JSON only: reading a record never
    runs code. A part that fails the check, or one from an older version (checksummed
    pickles, ``CRYSTALLIZE-OUTCOMES-1``, never unpickled), is skipped with a warning
    naming it, and its replicates rerun on resume.
``metrics.parquet``
    Written at the end: the metrics in long form.
``run.json``
    Written after the metrics (JSON): provenance, errors, hypotheses, the SHA-256 of
    ``metrics.parquet`` and the name and SHA-256 of every outcome part the run is made
    of, so a finished run whose files were damaged or lost afterwards can say so. A
    version with ``run.json`` finished; one without it was interrupted and can be
    resumed from its outcome parts.
``metadata.json``, ``_manifest.json``, ``<condition>/results.json``, ``<condition>/.crystallize_complete``
    Written after ``run.json``: the files Crystallize 0.27 wrote, derived from the same result
    (see :mod:`crystallize.store.legacy_files`); never read back.

This module writes and decodes the records and owns the version-folder primitives
(list, claim, prune); finding, opening, listing and resetting runs goes through
``crystallize.store.repository.RunRepository``, which builds on them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import struct
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.plan import (
    ArtifactEntry,
    ErrorRecord,
    ReplicateOutcome,
    StepRecord,
    decode_metric_values,
    encode_metrics,
    ensure_storable,
)
from ..errors import CorruptRecordError, ValidationError
from . import arrow_columns as cols
from . import layout, legacy_files
from .filesystem import Store
from .lease import is_live, lease_file
from .locations import cache_signing_key

if TYPE_CHECKING:
    from ..results import Result

logger = logging.getLogger(__name__)


class OldRecordError(CorruptRecordError):
    """An outcome part written by an older version of Crystallize (a pickle): skipped, never loaded."""


def signing_key() -> bytes | None:
    """The key outcome parts are signed and checked with (the driver's cache signing key)."""
    return cache_signing_key()


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
    """Delete all but the newest ``keep`` versions (``protect`` always stays); returns what was removed.

    Only versions no run is writing are deleted: finished ones (with ``run.json``) and unfinished
    ones whose lease expired (the run that wrote them died). An unfinished version with a live
    lease, or with no lease at all (nothing says it is dead), stays.
    """
    versions = list_versions(store, experiment)
    kept = set(versions[-keep:]) if keep > 0 else set()
    doomed = []
    for version in versions:
        if version in kept or version == protect:
            continue
        finished = store.exists(layout.run_file(experiment, version, layout.RUN_RECORD))
        if finished or _lease_expired(store, experiment, version):
            doomed.append(version)
        else:
            logger.info("Keeping '%s' v%d: a run may still be writing it (no expired lease)", experiment, version)
    for version in doomed:
        store.delete(layout.version_dir(experiment, version))
    return doomed


def _lease_expired(store: Store, experiment: str, version: int) -> bool:
    return store.exists(lease_file(experiment, version)) and not is_live(store, experiment, version)


class RunRecorder:
    """Writes the records of one version; outcomes are flushed in small atomic parts."""

    def __init__(self, store: Store, experiment: str, version: int, *, flush_seconds: float = 0.2) -> None:
        self.store = store
        self.experiment = experiment
        self.version = version
        self.flush_seconds = flush_seconds
        self._buffer: list[ReplicateOutcome] = []
        self._last_flush = 0.0
        self._key: bytes | None = None
        self._keyed = False
        self._written: dict[str, str] = {}  # part name -> SHA-256 of its bytes, for run.json
        self._artifact_steps: dict[str, str] = {}  # artifact name -> step folder, for _manifest.json

    @property
    def published(self) -> int:
        """How many parts this recorder published (each flush adds one)."""
        return len(self._written)

    @property
    def written_parts(self) -> frozenset[str]:
        """The outcome parts this recorder published."""
        return frozenset(self._written)

    def key(self) -> bytes | None:
        if not self._keyed:
            self._key, self._keyed = signing_key(), True
        return self._key

    def write_plan(self, plan: dict[str, Any]) -> None:
        self.store.write_bytes(layout.run_file(self.experiment, self.version, layout.PLAN), dumps_json(plan))

    def record(self, outcome: ReplicateOutcome) -> None:
        self._buffer.append(outcome)
        if outcome.artifacts:
            self._note_artifacts([outcome])
        now = time.monotonic()
        if now - self._last_flush >= self.flush_seconds or len(self._buffer) >= 5000:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        outcomes = list(self._buffer)
        part = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
        blob = encode_part(outcomes, self.key())
        self.store.write_bytes(layout.outcome_part(self.experiment, self.version, part), blob)
        # Only now out of the buffer: a Ctrl-C or a store error while the part is written leaves
        # them there for the final flush (a part written twice is read as one: same replicates).
        del self._buffer[: len(outcomes)]
        self._written[part] = hashlib.sha256(blob).hexdigest()
        self._last_flush = time.monotonic()

    def _parts(self) -> dict[str, str]:
        """Every intact part of the version (this session's, and those a resumed run started from)."""
        folder = f"{layout.version_dir(self.experiment, self.version)}/{layout.OUTCOMES}"
        parts: dict[str, str] = {}
        for name in _part_names(self.store, folder):
            if name in self._written:
                parts[name] = self._written[name]
                continue
            try:
                blob = self.store.read_bytes(f"{folder}/{name}")
                outcomes = decode_part(blob, self.key())
            except Exception:  # noqa: BLE001 - skipped on resume already; its replicates were rerun
                continue
            self._note_artifacts(outcomes)
            parts[name] = hashlib.sha256(blob).hexdigest()
        return parts

    def _note_artifacts(self, outcomes: list[ReplicateOutcome]) -> None:
        for outcome in outcomes:
            for entry in outcome.artifacts:
                self._artifact_steps.setdefault(entry.name, entry.step)

    def finish(self, result: Result) -> None:
        """Flush, then write ``metrics.parquet``, ``run.json`` (the mark of a finished run) and, derived
        from the same result, the files Crystallize 0.27 wrote (:mod:`crystallize.store.legacy_files`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        sink = pa.BufferOutputStream()
        pq.write_table(result.to_arrow(params=False), sink)  # the record: long form alone
        metrics = sink.getvalue().to_pybytes()
        self.store.write_bytes(layout.run_file(self.experiment, self.version, layout.METRICS), metrics)
        record = {
            "experiment": self.experiment,
            "version": self.version,
            "provenance": _recorded_provenance(result.provenance),
            "artifacts": {c: [vars(e) for e in entries] for c, entries in result.artifact_entries.items()},
            "errors": {
                c: {str(r): e.as_dict() for r, e in errs.items()} for c, errs in result.replicate_errors.items()
            },
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
            "checksums": {
                layout.METRICS: hashlib.sha256(metrics).hexdigest(),
                **{f"{layout.OUTCOMES}/{name}": sha for name, sha in sorted(self._parts().items())},
            },
        }
        self.store.write_bytes(layout.run_file(self.experiment, self.version, layout.RUN_RECORD), dumps_json(record))
        self._write_legacy_files(result)

    def _write_legacy_files(self, result: Result) -> None:
        """The 0.27 view of the run just recorded; a store that refuses it leaves the records as they are."""
        provenance = result.provenance
        ran = provenance.get("conditions")
        conditions = {c: tm.metrics for c, tm in result.metrics.conditions() if ran is None or c in ran}
        try:
            legacy_files.write(
                self.store,
                self.experiment,
                self.version,
                metadata={
                    "replicates": provenance.get("replicates"),
                    "id": provenance.get("pipeline_fingerprint"),
                    "name": self.experiment,
                },
                conditions=conditions,
                manifest=dict(sorted(self._artifact_steps.items())),
            )
        except OSError as exc:
            logger.warning(
                "%s: the run is recorded, but the files Crystallize 0.27 tools read (results.json ...) could "
                "not be written: %s: %s",
                self.store.uri(layout.version_dir(self.experiment, self.version)),
                type(exc).__name__,
                exc,
            )


# Provenance entries with one item per replicate: each outcome part holds its replicates' seeds, and
# loading a run rebuilds them from there, so run.json (written with an indent, by Python's slow JSON
# encoder) stays small however many replicates ran.
_PER_REPLICATE_PROVENANCE = ("seeds", "seeds_by_replicate")


def _recorded_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in provenance.items() if key not in _PER_REPLICATE_PROVENANCE}


# ------------------------------------------------------------------ outcome parts

PART_SUFFIX = ".arrow"
_PART_MAGIC = b"CRYSTALLIZE-OUTCOMES-2\n"
_OLD_PART_MAGIC = b"CRYSTALLIZE-OUTCOMES-1\n"  # checksummed pickles of older versions: never unpickled
_PART_FORMAT = "arrow-ipc-stream"


def _part_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("condition", pa.string(), nullable=False),
            pa.field("replicate", pa.int64(), nullable=False),
            pa.field("seed", pa.string()),  # decimal text: a seed is any Python int
            pa.field("seconds", pa.float64(), nullable=False),
            pa.field("error_stage", pa.string()),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            pa.field("error_traceback", pa.string()),
            pa.field("error_exception_types", pa.list_(pa.string())),
            pa.field("error_attempts", pa.int64()),
            pa.field(
                "steps",
                pa.list_(pa.struct([("step", pa.string()), ("seconds", pa.float64()), ("cache_hit", pa.bool_())])),
            ),
            pa.field(
                "artifacts",
                pa.list_(
                    pa.struct(
                        [
                            ("step", pa.string()),
                            ("name", pa.string()),
                            ("size", pa.int64()),
                            ("checksum", pa.string()),
                            ("path", pa.string()),
                        ]
                    )
                ),
            ),
            pa.field("reads", pa.list_(pa.string())),
            pa.field("metrics", pa.list_(pa.struct([("name", pa.string()), ("values", pa.string())]))),
        ]
    )


def _part_columns(outcomes: list[ReplicateOutcome], schema: Any) -> list[Any]:
    """The part's columns, built straight from the outcomes (:mod:`.arrow_columns`: no pandas, no row dicts)."""
    rows = len(outcomes)
    metrics = []
    for outcome in outcomes:
        try:
            metrics.append(encode_metrics(outcome.metrics))
        except ValidationError:  # not folded first (the driver folds before it records): fail it here
            metrics.append(encode_metrics(ensure_storable(outcome).metrics))
    # ensure_storable may have turned an outcome into a failed one: read the outcomes after it
    errors = [o.error for o in outcomes]
    failed = [e for e in errors if e is not None]
    steps = [s for o in outcomes for s in o.steps]
    artifacts = [a for o in outcomes for a in o.artifacts]
    types = {field.name: field.type for field in schema}

    def error_column(name: str, value: Any) -> Any:
        if not failed:
            return cols.nulls(rows, types[name])
        return cols.strings([None if e is None else value(e) for e in errors])

    if failed:
        exception_types = [t for e in failed for t in e.exception_types]
        error_types = cols.lists(
            [None if e is None else len(e.exception_types) for e in errors],
            cols.strings(exception_types),
            types["error_exception_types"],
        )
        attempts = cols.int64s([None if e is None else e.attempts for e in errors])
    else:
        error_types = cols.nulls(rows, types["error_exception_types"])
        attempts = cols.nulls(rows, types["error_attempts"])
    step_struct = types["steps"].value_type
    artifact_struct = types["artifacts"].value_type
    metric_struct = types["metrics"].value_type
    return [
        cols.strings([o.condition for o in outcomes]),
        cols.int64s([o.replicate for o in outcomes]),
        cols.strings([None if o.seed is None else str(int(o.seed)) for o in outcomes]),
        cols.float64s([float(o.seconds) for o in outcomes]),
        error_column("error_stage", lambda e: e.stage),
        error_column("error_type", lambda e: e.exception_type),
        error_column("error_message", lambda e: e.message),
        error_column("error_traceback", lambda e: e.traceback),
        error_types,
        attempts,
        cols.lists(
            [len(o.steps) for o in outcomes],
            cols.structs(
                [
                    cols.strings([s.step for s in steps]),
                    cols.float64s([float(s.seconds) for s in steps]),
                    cols.bools([bool(s.cache_hit) for s in steps]),
                ],
                step_struct,
            ),
            types["steps"],
        ),
        cols.lists(
            [len(o.artifacts) for o in outcomes],
            cols.structs(
                [
                    cols.strings([a.step for a in artifacts]),
                    cols.strings([a.name for a in artifacts]),
                    cols.int64s([int(a.size) for a in artifacts]),
                    cols.strings([a.checksum for a in artifacts]),
                    cols.strings([a.path for a in artifacts]),
                ],
                artifact_struct,
            ),
            types["artifacts"],
        ),
        cols.lists(
            [len(o.reads) for o in outcomes], cols.strings([r for o in outcomes for r in o.reads]), types["reads"]
        ),
        cols.lists(
            [len(m) for m in metrics],
            cols.structs(
                [cols.strings([n for m in metrics for n, _ in m]), cols.strings([t for m in metrics for _, t in m])],
                metric_struct,
            ),
            types["metrics"],
        ),
    ]


def _outcome_from_row(row: dict[str, Any]) -> ReplicateOutcome:
    condition, replicate = row["condition"], row["replicate"]
    if condition is None or replicate is None or row["seconds"] is None:
        raise CorruptRecordError("an outcome without its condition, replicate or time")
    error = None
    if row["error_type"] is not None:
        error = ErrorRecord(
            stage=row["error_stage"] or "",
            exception_type=row["error_type"],
            message=row["error_message"] or "",
            traceback=row["error_traceback"] or "",
            condition=condition,
            replicate=replicate,
            exception_types=tuple(row["error_exception_types"] or ()),
            attempts=row["error_attempts"] if row["error_attempts"] is not None else 1,
        )
    return ReplicateOutcome(
        condition=condition,
        replicate=replicate,
        seed=None if row["seed"] is None else int(row["seed"]),
        metrics={m["name"]: decode_metric_values(m["values"]) for m in row["metrics"] or ()},
        steps=[StepRecord(s["step"], s["seconds"], bool(s["cache_hit"])) for s in row["steps"] or ()],
        artifacts=[
            ArtifactEntry(step=a["step"], name=a["name"], size=a["size"], checksum=a["checksum"], path=a["path"])
            for a in row["artifacts"] or ()
        ],
        error=error,
        seconds=row["seconds"],
        reads=tuple(row["reads"] or ()),
    )


def _digests(core: bytes, body: bytes, key: bytes | None) -> tuple[str, str | None]:
    digest = hashlib.sha256(core)
    digest.update(body)
    signature = None
    if key is not None:
        mac = hmac.new(key, core, hashlib.sha256)
        mac.update(body)
        signature = mac.hexdigest()
    return digest.hexdigest(), signature


def encode_part(outcomes: list[ReplicateOutcome], key: bytes | None = None) -> bytes:
    """Outcomes as one part: ``MAGIC | header length | header JSON | Arrow IPC stream`` (one row per outcome).

    The header carries the SHA-256 of its other fields plus the body and, with a key, an
    HMAC-SHA256 of the same. A metric value that cannot be stored exactly turns its outcome
    into a failed one first (:func:`crystallize.engine.plan.ensure_storable`).
    """
    import pyarrow as pa

    schema = _part_schema()
    batch = pa.RecordBatch.from_arrays(_part_columns(outcomes, schema), schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    body = sink.getvalue().to_pybytes()
    core = {"format": _PART_FORMAT, "rows": len(outcomes)}
    sha, signature = _digests(json.dumps(core, sort_keys=True).encode(), body, key)
    header = {**core, "sha256": sha, **({"hmac": signature} if signature is not None else {})}
    header_bytes = json.dumps(header, sort_keys=True).encode()
    return _PART_MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + body


def decode_part(blob: bytes, key: bytes | None = None) -> list[ReplicateOutcome]:
    """The outcomes of a part; ``CorruptRecordError`` unless it is intact (and, with ``key``, signed by it).

    Nothing is decoded before the checksum (and signature) check out, and what is decoded is
    Arrow data of a fixed schema and JSON text: reading a part never runs code.
    """
    if blob.startswith(_OLD_PART_MAGIC):
        raise OldRecordError(
            "written by an older version of Crystallize as a pickle, which is never loaded (it could run code)"
        )
    if not blob.startswith(_PART_MAGIC) or len(blob) < len(_PART_MAGIC) + 4:
        raise CorruptRecordError("truncated or altered outcome record (not an outcome part)")
    (length,) = struct.unpack_from("<I", blob, len(_PART_MAGIC))
    start = len(_PART_MAGIC) + 4
    try:
        header = json.loads(blob[start : start + length])
        sha, signature = str(header.pop("sha256")), header.pop("hmac", None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecordError(f"truncated or altered outcome record (unreadable header: {exc})") from exc
    body = blob[start + length :]
    expected_sha, expected_signature = _digests(json.dumps(header, sort_keys=True).encode(), body, key)
    if not hmac.compare_digest(expected_sha, sha):
        raise CorruptRecordError("truncated or altered outcome record (checksum mismatch)")
    if expected_signature is not None and not (
        isinstance(signature, str) and hmac.compare_digest(expected_signature, signature)
    ):
        raise CorruptRecordError("outcome record not signed with this signing key (not trusted)")
    if header.get("format") != _PART_FORMAT:
        raise CorruptRecordError(f"unknown outcome record format {header.get('format')!r}")
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.BufferReader(body))
        if not reader.schema.equals(_part_schema()):
            raise CorruptRecordError("outcome record with an unexpected schema")
        rows = reader.read_all().to_pylist()
        if len(rows) != header.get("rows"):
            raise CorruptRecordError("outcome record holds a different number of outcomes than its header says")
        return [_outcome_from_row(row) for row in rows]
    except CorruptRecordError:
        raise
    except Exception as exc:  # whatever Arrow or a field makes of bad bytes, the record is bad
        raise CorruptRecordError(f"unreadable outcome record: {type(exc).__name__}: {exc}") from exc


def parse_json(blob: bytes) -> dict[str, Any]:
    """A JSON record's object; ``CorruptRecordError`` saying what is wrong with it."""
    try:
        value = json.loads(blob)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both
        raise CorruptRecordError(f"truncated or not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise CorruptRecordError("not a JSON object")
    return value


def read_json(store: Store, relative: str) -> dict[str, Any] | None:
    """A JSON record (None when it does not exist); ``CorruptRecordError`` naming the file when it is damaged."""
    try:
        blob = store.read_bytes(relative)
    except FileNotFoundError:
        return None
    try:
        return parse_json(blob)
    except CorruptRecordError as exc:
        raise CorruptRecordError(f"{store.uri(relative)} is damaged: {exc}") from exc


@dataclass
class OutcomeRead:
    """What reading a version's outcome parts found: the outcomes, every part by name with the
    SHA-256 of its bytes, and each part that was skipped with the reason."""

    outcomes: dict[tuple[str, int], ReplicateOutcome] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


_OLD_PART_SUFFIX = ".pkl"


def _part_names(store: Store, folder: str) -> list[str]:
    """Outcome part names, oldest first (names start with the time they were written)."""
    names = store.list_dir(folder)
    return sorted(n for n in names if n.startswith("part-") and n.endswith((PART_SUFFIX, _OLD_PART_SUFFIX)))


def read_outcomes(store: Store, experiment: str, version: int, only: Collection[str] | None = None) -> OutcomeRead:
    """Every intact outcome of a version (``only``: of the parts so named); a later record of the
    same task replaces an earlier one.

    A part that is damaged, not signed with the signing key, or from an older version is
    skipped with a warning naming it; its replicates rerun on resume.
    """
    folder = f"{layout.version_dir(experiment, version)}/{layout.OUTCOMES}"
    key = signing_key()
    found = OutcomeRead()
    for name in _part_names(store, folder):
        if only is not None and name not in only:
            continue
        try:
            blob = store.read_bytes(f"{folder}/{name}")
        except FileNotFoundError:  # deleted since the listing (a reset, a prune)
            continue
        found.parts[name] = hashlib.sha256(blob).hexdigest()
        try:
            batch = decode_part(blob, key)
        except OldRecordError as exc:
            found.skipped[name] = str(exc)
            logger.warning(
                "Skipping outcome record %s/%s: %s; its replicates rerun on resume", store.uri(folder), name, exc
            )
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged part costs its replicates a rerun, nothing more
            found.skipped[name] = str(exc)
            logger.warning("Skipping unreadable outcome record %s/%s: %s", store.uri(folder), name, exc)
            continue
        for outcome in batch:
            found.outcomes[(outcome.condition, outcome.replicate)] = outcome
    return found


class OutcomeFeed:
    """The outcome parts of a version not read yet: what other sessions recorded since."""

    def __init__(self, store: Store, experiment: str, version: int, seen: Collection[str] = ()) -> None:
        self.store = store
        self.experiment = experiment
        self.version = version
        self.seen = set(seen)

    def read_new(self, skip: Collection[str] = ()) -> dict[tuple[str, int], ReplicateOutcome]:
        """Outcomes of the parts published since the last call (``skip``: parts known otherwise)."""
        folder = f"{layout.version_dir(self.experiment, self.version)}/{layout.OUTCOMES}"
        names = set(_part_names(self.store, folder)) - self.seen - set(skip)
        self.seen |= names
        if not names:
            return {}
        return read_outcomes(self.store, self.experiment, self.version, only=names).outcomes


def load_outcomes(store: Store, experiment: str, version: int) -> dict[tuple[str, int], ReplicateOutcome]:
    """Every intact recorded outcome of a version (see :func:`read_outcomes`)."""
    return read_outcomes(store, experiment, version).outcomes
