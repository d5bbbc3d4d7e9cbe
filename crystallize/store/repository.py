"""``RunRepository``: the one place that knows how stored runs are found, opened, listed and reset.

A run is a version folder ``<experiment>/v<N>/`` (see :mod:`crystallize.store.layout`).
A folder without ``plan.json`` is a claim whose run never started (abandoned); one with
``plan.json`` but no ``run.json`` is an interrupted run; one with ``run.json`` finished.
Callers (resume, the graph, artifacts, the command line, ``load_run``) ask this module
rather than walking versions themselves, so those three states mean the same everywhere.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ValidationError
from . import layout
from .filesystem import Store
from .locations import absolute
from .records import claim_version, list_versions, load_outcomes, prune_versions, read_json

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
class RunRecords:
    """What one stored version holds: its plan, its final record (None: interrupted), its outcomes."""

    experiment: str
    version: int
    plan: dict[str, Any]
    record: dict[str, Any] | None
    repository: RunRepository = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """``run.json`` is written last, so its presence is what marks a finished run."""
        return self.record is not None

    @cached_property
    def outcomes(self) -> dict[tuple[str, int], ReplicateOutcome]:
        """Read on first use: listing finished runs never needs them, and they can be large."""
        return self.repository.outcomes(self.experiment, self.version)


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
        """Every version with a plan, of ``experiment`` or of every experiment (by name, then version)."""
        names = [experiment] if experiment is not None else self._names()
        found = []
        for name in names:
            for version in self.versions(name):
                run = self.open(name, version)
                if run is not None:
                    found.append(run)
        return found

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
    def plan(self, experiment: str, version: int) -> dict[str, Any] | None:
        return read_json(self.store, layout.run_file(experiment, version, layout.PLAN))

    def record(self, experiment: str, version: int) -> dict[str, Any] | None:
        return read_json(self.store, layout.run_file(experiment, version, layout.RUN_RECORD))

    def outcomes(self, experiment: str, version: int) -> dict[tuple[str, int], ReplicateOutcome]:
        return load_outcomes(self.store, experiment, version)

    def open(self, experiment: str, version: int) -> RunRecords | None:
        """The records of one version, or None when it has no plan (an abandoned claim, or nothing)."""
        plan = self.plan(experiment, version)
        if plan is None:
            return None
        return RunRecords(experiment, version, plan, self.record(experiment, version), self)

    def metrics(self, experiment: str, version: int) -> pa.Table:
        """The long-form metrics table of a finished run (``FileNotFoundError`` for any other)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        blob = self.store.read_bytes(layout.run_file(experiment, version, layout.METRICS))
        return pq.read_table(pa.BufferReader(blob))

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

    def reset(self, experiment: str, version: int) -> None:
        """Remove a version's run records before an unversioned rerun into it, so old outcomes cannot mix in.

        ``run.json`` goes first (a reset cut short leaves an unfinished run, never a
        finished one with missing outcomes). ``plan.json`` stays, to be overwritten by the
        new plan; artifacts stay, to be overwritten replicate by replicate.
        """
        for name in (layout.RUN_RECORD, layout.METRICS, layout.OUTCOMES):
            self.store.delete(layout.run_file(experiment, version, name))
        logger.debug("reset the run records of '%s' v%d in %s", experiment, version, self.store.location)
