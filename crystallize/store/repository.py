"""``RunRepository``: the one place that knows how stored runs are found, opened, listed and reset.

A run is a version folder ``<experiment>/v<N>/`` (see :mod:`crystallize.store.layout`).
A folder without ``plan.json`` is a claim whose run never started (abandoned); one with
``plan.json`` but no ``run.json`` is an interrupted run; one with ``run.json`` finished.
Callers (resume, the graph, artifacts, the command line, ``load_run``) ask this module
rather than walking versions themselves, so those three states mean the same everywhere.

Damage stays local and is named: a ``plan.json`` that cannot be read makes ``open`` raise a
``CorruptRecordError`` naming the file, and ``runs`` lists that version as damaged and goes on;
an unreadable ``run.json`` leaves the run unfinished (resumable), with the file named in
``RunRecords.damage``; so do outcome parts that are skipped, and, for a finished run, parts it
was made of that are missing or changed and a ``metrics.parquet`` that does not match its
checksum in ``run.json`` or the outcome parts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ..errors import CorruptRecordError, ValidationError
from . import layout, legacy_files
from .claims import CLAIMS
from .filesystem import Store
from .locations import absolute
from .records import OutcomeRead, claim_version, list_versions, parse_json, prune_versions, read_outcomes

if TYPE_CHECKING:
    import pyarrow as pa

    from ..engine.plan import ReplicateOutcome

logger = logging.getLogger(__name__)

Requirement = Literal["claim", "plan", "record"]
_MARKERS: dict[str, str | None] = {"claim": None, "plan": layout.PLAN, "record": layout.RUN_RECORD}


# ------------------------------------------------------------------ locations


@dataclass(frozen=True)
class RunLocation:
    """A run or experiment location split up: ``<root>/<experiment>[/v<N>][?<query>]``.

    ``root`` is kept as given (relative paths stay relative, ``"."`` for a bare name);
    ``query`` carries store options such as ``endpoint_override`` and belongs to the
    root, so :meth:`store` puts it back there.
    """

    root: str
    experiment: str
    version: int | None
    query: str = ""

    @property
    def store_location(self) -> str:
        """The store root every process resolves the same way (local paths made absolute here)."""
        return absolute(self.root) + (f"?{self.query}" if self.query else "")

    def store(self) -> Store:
        return Store(self.store_location)


def parse_location(location: str | os.PathLike[str]) -> RunLocation:
    """``root/experiment/vN`` or ``root/experiment`` (a path or a URI, query included) as a ``RunLocation``."""
    text, _, query = os.fspath(location).partition("?")  # s3://b/p/exp/v0?endpoint_override=...
    text = text.rstrip("/")
    head, _, last = text.rpartition("/")
    version = layout.parse_version(last)
    if version is not None:
        text = head
    root, _, experiment = text.rpartition("/")
    return RunLocation(root or ".", experiment, version, query)


# ------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Damage:
    """One file of a run that is damaged or missing: ``file`` relative to the version folder."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file} {self.problem}"


@dataclass(frozen=True)
class RunRecords:
    """What one stored version holds: its plan, its final record (None: interrupted), its outcomes.

    ``problems`` are the damaged files found when the version was opened (an unreadable
    ``plan.json``, in which case ``plan`` is empty, or ``run.json``); :attr:`damage` adds
    what reading its outcome parts and metrics finds.
    """

    experiment: str
    version: int
    plan: dict[str, Any]
    record: dict[str, Any] | None
    repository: RunRepository = field(repr=False, compare=False)
    problems: tuple[Damage, ...] = ()

    @property
    def finished(self) -> bool:
        """``run.json`` is written last, so its presence is what marks a finished run."""
        return self.record is not None

    @cached_property
    def read(self) -> OutcomeRead:
        """Read on first use: the outcome parts can be large.

        A finished run is the parts its ``run.json`` names (others in the folder, such as those
        of a later resume cut short, are not read); an unfinished one is every part there.
        """
        return self.repository.read_outcomes(self.experiment, self.version, self.part_names())

    def part_names(self) -> frozenset[str] | None:
        """The outcome parts a finished run's ``run.json`` names (None: every part in the folder)."""
        checksums = self.record.get("checksums") if self.record is not None else None
        if not isinstance(checksums, dict):
            return None
        prefix = f"{layout.OUTCOMES}/"
        return frozenset(str(f)[len(prefix) :] for f in checksums if str(f).startswith(prefix))

    @property
    def outcomes(self) -> dict[tuple[str, int], ReplicateOutcome]:
        return self.read.outcomes

    @cached_property
    def damage(self) -> tuple[Damage, ...]:
        """Every damaged or missing file of this run (empty for an intact one); reads the outcome parts."""
        read = self.read
        found = list(self.problems)
        found.extend(Damage(f"{layout.OUTCOMES}/{name}", f"was skipped: {why}") for name, why in read.skipped.items())
        if self.record is not None:
            found.extend(self.repository.check_finished(self.experiment, self.version, self.record, read))
        return tuple(found)


class RunRepository:
    """Finds, opens, lists and resets the runs stored under one data store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"RunRepository({self.store.location!r})"

    # -- finding ------------------------------------------------------------------
    def experiments(self) -> list[str]:
        """Names under the root with at least one version, sorted."""
        return [name for name in self._names() if self.versions(name)]

    def versions(self, experiment: str) -> list[int]:
        """Every claimed version of ``experiment``, oldest first; raises on a name that is not a folder name."""
        return list_versions(self.store, experiment)

    def latest(self, experiment: str, *, require: Requirement) -> int | None:
        """The newest version that has been claimed, has a plan, or has a final record; None when none has.

        ``"plan"`` skips abandoned claims (a run killed before it wrote ``plan.json``);
        ``"record"`` also skips interrupted runs, leaving only finished ones.
        """
        if require not in _MARKERS:
            raise ValidationError(f"require must be one of {sorted(_MARKERS)}, got {require!r}")
        marker = _MARKERS[require]
        for version in reversed(self.versions(experiment)):
            if marker is None or self.store.exists(layout.run_file(experiment, version, marker)):
                return version
        return None

    def runs(self, experiment: str | None = None) -> list[RunRecords]:
        """Every version with a plan, of ``experiment`` or of every experiment (by name, then version).

        A version whose ``plan.json`` cannot be read is listed too, with an empty plan and
        the damage in ``problems``: one damaged run never hides the others.
        """
        names = [experiment] if experiment is not None else self._names()
        found = []
        for name in names:
            for version in self.versions(name):
                try:
                    run = self.open(name, version)
                except CorruptRecordError:
                    run = self._damaged_plan(name, version)
                if run is not None:
                    found.append(run)
        return found

    def _damaged_plan(self, experiment: str, version: int) -> RunRecords:
        _, plan_damage = self._read_record(experiment, version, layout.PLAN)
        record, record_damage = self._read_record(experiment, version, layout.RUN_RECORD)
        problems = tuple(d for d in (plan_damage, record_damage) if d is not None)
        return RunRecords(experiment, version, {}, record, self, problems)

    def _names(self) -> list[str]:
        """Entries of the root that can be experiment names; anything else there is not ours."""
        names = []
        for name in self.store.list_dir(""):
            try:
                layout.experiment_dir(name)
            except (ValueError, ValidationError):
                continue
            names.append(name)
        return names

    # -- opening ------------------------------------------------------------------
    def _read_record(self, experiment: str, version: int, name: str) -> tuple[dict[str, Any] | None, Damage | None]:
        """A JSON record and, when it cannot be read, the damage instead (None, None: there is none)."""
        try:
            blob = self.store.read_bytes(layout.run_file(experiment, version, name))
        except FileNotFoundError:
            return None, None
        try:
            return parse_json(blob), None
        except CorruptRecordError as exc:
            return None, Damage(name, f"is damaged: {exc}")

    def _raise_for(self, experiment: str, version: int, damage: Damage) -> None:
        uri = self.store.uri(layout.run_file(experiment, version, damage.file))
        raise CorruptRecordError(f"{uri} {damage.problem}")

    def plan(self, experiment: str, version: int) -> dict[str, Any] | None:
        """The plan (None when there is none); ``CorruptRecordError`` naming the file when it cannot be read."""
        plan, damage = self._read_record(experiment, version, layout.PLAN)
        if damage is not None:
            self._raise_for(experiment, version, damage)
        return plan

    def record(self, experiment: str, version: int) -> dict[str, Any] | None:
        """The final record (None when there is none); ``CorruptRecordError`` naming the file when it cannot be read."""
        record, damage = self._read_record(experiment, version, layout.RUN_RECORD)
        if damage is not None:
            self._raise_for(experiment, version, damage)
        return record

    def read_outcomes(self, experiment: str, version: int, only: frozenset[str] | None = None) -> OutcomeRead:
        return read_outcomes(self.store, experiment, version, only)

    def outcomes(self, experiment: str, version: int) -> dict[tuple[str, int], ReplicateOutcome]:
        return self.read_outcomes(experiment, version).outcomes

    def open(self, experiment: str, version: int) -> RunRecords | None:
        """The records of one version, or None when it has no plan (an abandoned claim, or nothing).

        A ``plan.json`` that cannot be read raises ``CorruptRecordError`` naming it; a ``run.json``
        that cannot be read leaves the run unfinished, with the damage in ``problems``.
        """
        plan = self.plan(experiment, version)
        if plan is None:
            return None
        record, damage = self._read_record(experiment, version, layout.RUN_RECORD)
        return RunRecords(experiment, version, plan, record, self, (damage,) if damage is not None else ())

    def check_finished(self, experiment: str, version: int, record: dict[str, Any], read: OutcomeRead) -> list[Damage]:
        """What of a finished run no longer matches its ``run.json``: outcome parts missing or changed,
        ``metrics.parquet`` missing, not matching its checksum, or not matching the outcome parts.
        Records written before ``run.json`` had checksums are not checked."""
        checksums = record.get("checksums")
        if not isinstance(checksums, dict):
            return []
        found: list[Damage] = []
        prefix = f"{layout.OUTCOMES}/"
        for file, sha in checksums.items():
            if not str(file).startswith(prefix):
                continue
            name = str(file)[len(prefix) :]
            if name not in read.parts:
                found.append(Damage(file, "is missing (its replicates are lost; resume reruns them)"))
            elif name not in read.skipped and read.parts[name] != sha:
                found.append(Damage(file, "changed after the run finished (it does not match run.json)"))
        expected = checksums.get(layout.METRICS)
        if expected is None:
            return found
        try:
            blob = self.store.read_bytes(layout.run_file(experiment, version, layout.METRICS))
        except FileNotFoundError:
            return [*found, Damage(layout.METRICS, "is missing")]
        if hashlib.sha256(blob).hexdigest() != expected:
            return [*found, Damage(layout.METRICS, "is damaged (it does not match its checksum in run.json)")]
        if not found and not read.skipped and _metric_rows(blob) != _outcome_rows(read):
            found.append(Damage(layout.METRICS, "does not match the outcome parts"))
        return found

    def metrics(self, experiment: str, version: int) -> pa.Table:
        """The long-form metrics table of a finished run (``FileNotFoundError`` for any other).

        ``CorruptRecordError`` naming the file when it cannot be read or does not match its
        checksum in ``run.json``.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        relative = layout.run_file(experiment, version, layout.METRICS)
        blob = self.store.read_bytes(relative)
        record, _ = self._read_record(experiment, version, layout.RUN_RECORD)
        checksums = record.get("checksums") if record else None
        expected = checksums.get(layout.METRICS) if isinstance(checksums, dict) else None
        if expected is not None and hashlib.sha256(blob).hexdigest() != expected:
            raise CorruptRecordError(
                f"{self.store.uri(relative)} is damaged: it does not match its checksum in {layout.RUN_RECORD}"
            )
        try:
            return pq.read_table(pa.BufferReader(blob))
        except Exception as exc:  # whatever Parquet makes of bad bytes, the file is damaged
            raise CorruptRecordError(
                f"{self.store.uri(relative)} is damaged (truncated or not Parquet): {type(exc).__name__}: {exc}"
            ) from exc

    def planned_at(self, experiment: str, version: int) -> datetime | None:
        """When ``plan.json`` was written: the start of a run that never wrote its record."""
        path = self.store.full_path(layout.run_file(experiment, version, layout.PLAN))
        return self.store.fs.get_file_info(path).mtime

    def uri(self, experiment: str, version: int) -> str:
        """The version folder as a path or URI a person can paste."""
        return self.store.uri(layout.version_dir(experiment, version))

    # -- changing -----------------------------------------------------------------
    def claim(self, experiment: str) -> int:
        return claim_version(self.store, experiment)

    def prune(self, experiment: str, keep: int, protect: int | None = None) -> list[int]:
        return prune_versions(self.store, experiment, keep, protect)

    def trim_large_artifacts(self, experiment: str, limit_bytes: int, *, keep: int) -> list[str]:
        """Delete artifact files over ``limit_bytes`` from finished versions other than ``keep`` (0.27's
        ``big_file_threshold_mb``); returns what went.

        Only artifacts (``replicate_<i>/...``) are touched: the run records, which hold the results,
        stay whole, and a version that is not finished (another process may be writing it) is left
        alone.
        """
        removed: list[str] = []
        for version in self.versions(experiment):
            if version == keep or not self.store.exists(layout.run_file(experiment, version, layout.RUN_RECORD)):
                continue
            folder = layout.version_dir(experiment, version)
            for relative, size in list(self.store.walk_sizes(folder)):
                inside = relative[len(folder) + 1 :] if relative.startswith(folder + "/") else relative
                if size > limit_bytes and layout.is_artifact_path(inside):
                    self.store.delete(relative)
                    removed.append(relative)
        return removed

    # -- starting and abandoning a run ----------------------------------------------
    def has_version(self, experiment: str, version: int) -> bool:
        try:
            return self.store.exists(layout.version_dir(experiment, version))
        except OSError:
            return False  # an unreachable store is reported by the claim that follows

    def check_writable(self, experiment: str) -> None:
        """A local data root must be (or become) a folder this process can write into; checked before anything runs."""
        store = self.store
        if not store.is_local:
            return  # an object store answers only when used: its errors are turned into ours where it is first used
        root = store.base
        probe = root
        while not os.path.lexists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        fix = "Point ArtifactPlugin(root_dir=...) or $CRYSTALLIZE_DATA_URI at a folder you can write to."
        if os.path.lexists(probe) and not os.path.isdir(probe):
            what = "is a file" if probe == root else f"is inside {probe}, which is a file"
            raise ValidationError(f"Experiment '{experiment}': the data root {root} {what}, not a folder. {fix}")
        if os.path.isdir(probe) and not os.access(probe, os.W_OK | os.X_OK):
            what = "is a read-only folder" if probe == root else f"cannot be made: {probe} is read-only"
            raise ValidationError(f"Experiment '{experiment}': the data root {root} {what} for this user. {fix}")

    def write_error(self, experiment: str, exc: OSError) -> ValidationError:
        """The error for a store that refused the run's records."""
        return ValidationError(
            f"Experiment '{experiment}': cannot write the run records into the data root {self.store.location}: "
            f"{type(exc).__name__}: {exc}. Check that it is a folder (or bucket) you can write to, or point "
            "ArtifactPlugin(root_dir=...) or $CRYSTALLIZE_DATA_URI elsewhere."
        )

    def discard(self, experiment: str, version: int, *, whole: bool) -> None:
        """Remove what a session that ran no replicate left: its claimed folder, or (v0 reused) the plan it wrote."""
        store = self.store
        target = layout.version_dir(experiment, version) if whole else layout.run_file(experiment, version, layout.PLAN)
        try:
            store.delete(target)
        except Exception as exc:  # noqa: BLE001 - the error that ended the session matters more
            logger.warning("Could not remove %s after the run failed before any replicate: %s", store.uri(target), exc)
        else:
            logger.info("The run failed before any replicate finished; removed %s", store.uri(target))

    def reset(self, experiment: str, version: int) -> None:
        """Remove a version's run records before an unversioned rerun into it, so old outcomes cannot mix in.

        The 0.27 files go first, completion markers before the rest (a 0.27 tool never sees a
        condition complete that is being rerun), then ``run.json`` (a reset cut short leaves an
        unfinished run, never a finished one with missing outcomes). ``plan.json`` stays, to be
        overwritten by the new plan; artifacts stay, to be overwritten replicate by replicate.
        """
        legacy_files.remove(self.store, experiment, version)
        for name in (layout.RUN_RECORD, layout.METRICS, layout.OUTCOMES, CLAIMS):
            self.store.delete(layout.run_file(experiment, version, name))
        logger.debug("reset the run records of '%s' v%d in %s", experiment, version, self.store.location)


def _metric_rows(blob: bytes) -> Counter[tuple[str, int, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(blob), columns=["condition", "replicate", "metric"])
    except Exception:  # noqa: BLE001 - unreadable: it matches nothing
        return Counter()
    columns = [table.column(name).to_pylist() for name in ("condition", "replicate", "metric")]
    return Counter(zip(*columns, strict=True))


def _outcome_rows(read: OutcomeRead) -> Counter[tuple[str, int, str]]:
    rows: Counter[tuple[str, int, str]] = Counter()
    for outcome in read.outcomes.values():
        if outcome.error is None:
            for name, values in outcome.metrics.items():
                rows[(outcome.condition, outcome.replicate, name)] += len(values)
    return rows
