"""Artifacts in the data store: ``<experiment>/v<N>/replicate_<i>/<condition>/<step>/<name>``.

Workers write each artifact as soon as its step finishes, atomically, straight to
the store (a local folder, a shared mount or an object store URI). The driver
claims the version and writes the run records (see ``crystallize.store.records``).
"""

from __future__ import annotations

import logging
import operator
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..constants import BASELINE_CONDITION
from ..errors import RunNotFoundError, ValidationError
from ..runs import finished_metrics
from ..store import layout, legacy_files
from ..store.filesystem import Store
from ..store.lease import DEFAULT_EXPIRES_AFTER, DEFAULT_RENEW_EVERY
from ..store.locations import data_location
from ..store.repository import RunRepository, parse_location
from .base import BasePlugin

if TYPE_CHECKING:
    from ..context import FrozenContext
    from ..engine.plan import ReplicateOutcome, RunSpec
    from ..experiment import Experiment
    from ..steps import PipelineStep

logger = logging.getLogger(__name__)


@dataclass
class ArtifactPlugin(BasePlugin):
    """Stores ``ctx.artifacts`` and the run records under ``root_dir``.

    ``root_dir`` is a folder or a URI (``s3://bucket/prefix``); by default
    ``$CRYSTALLIZE_DATA_URI``, else ``data``. Every run claims a new ``v<N>``
    (``versioned=False`` reuses ``v0``); ``artifact_retention`` keeps the newest N versions.
    ``big_file_threshold_mb`` (0.27's; default None, or ``$CRYSTALLIZE_BIG_FILE_THRESHOLD_MB``):
    after a versioned run finishes, artifact files over that many MiB (as 0.27 counts them) are
    deleted from the experiment's other finished versions; their run records stay whole, so
    their results still load. ``max_artifact_bytes`` (default None: no limit) fails a replicate whose step adds a larger
    artifact, with an error naming the artifact, the step, its size and the limit.
    A run holds a lease on its version (renewed every ``lease_renew_seconds``, expired
    ``lease_seconds`` after the last renewal): retention deletes only finished versions and
    versions whose lease expired, never one another process is still writing.
    """

    root_dir: str | None = None
    versioned: bool = True
    artifact_retention: int | None = None
    big_file_threshold_mb: float | None = None
    max_artifact_bytes: int | None = None
    lease_seconds: float = DEFAULT_EXPIRES_AFTER
    lease_renew_seconds: float = DEFAULT_RENEW_EVERY
    version: int | None = field(default=None, init=False)
    experiment_id: str | None = field(default=None, init=False)
    location: str | None = field(default=None, init=False, repr=False)
    _store_cache: Store | None = field(default=None, init=False, repr=False, compare=False)

    def store(self) -> Store:
        """The data store; its location is fixed (made absolute) on the driver."""
        if self.location is None:
            self.location = data_location(self.root_dir)
        return Store(self.location)

    def bind(self, experiment_id: str, version: int) -> None:
        """Called by the engine once the run's version is known, before ``before_run``."""
        self.store()
        self.experiment_id = experiment_id
        self.version = version

    def before_run(self, experiment: Experiment) -> None:
        if self.artifact_retention and self.experiment_id is not None:
            repository = RunRepository(self.store())
            removed = repository.prune(self.experiment_id, self.artifact_retention, protect=self.version)
            if removed:
                logger.info(
                    "Removed versions %s of '%s' (artifact_retention=%d)",
                    removed,
                    self.experiment_id,
                    self.artifact_retention,
                )

    def after_run(self, experiment: Experiment, result: Any) -> None:
        mb = self.big_file_threshold_mb
        if mb is None or not self.versioned or self.experiment_id is None or self.version is None:
            return
        removed = RunRepository(self.store()).trim_large_artifacts(
            self.experiment_id, int(mb * 1024 * 1024), keep=self.version
        )
        if removed:
            logger.info(
                "Removed %d artifact file(s) over %s MB from older versions of '%s' (big_file_threshold_mb)",
                len(removed),
                mb,
                self.experiment_id,
            )

    @property
    def run_dir(self) -> str | None:
        """The run's folder as a path or URI (``None`` before a run)."""
        if self.experiment_id is None or self.version is None:
            return None
        return self.store().uri(layout.version_dir(self.experiment_id, self.version))

    def __post_init__(self) -> None:
        self.big_file_threshold_mb = _threshold_mb(self.big_file_threshold_mb)
        limit = self.max_artifact_bytes
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValidationError(
                f"ArtifactPlugin(max_artifact_bytes=...) must be None or a size in bytes, got {limit!r}"
            )

    def after_step(self, experiment: RunSpec, step: PipelineStep, data: Any, ctx: FrozenContext) -> None:
        if not len(ctx.artifacts) or getattr(experiment, "mode", "run") == "apply":
            return
        if self.max_artifact_bytes is not None:
            self._check_sizes(experiment, step, ctx)
        if getattr(experiment, "artifacts_via_driver", False):
            return  # the bytes ride back in the outcome; the driver writes them (store_from_driver)
        if self.experiment_id is None or self.version is None:
            return
        store = self._worker_store()
        for record in ctx.artifacts:
            if record.step_name != step.name or record.path is not None:
                continue
            relative = layout.artifact(
                self.experiment_id, self.version, ctx["replicate"], ctx["condition"], step.name, record.name
            )
            store.write_bytes(relative, record.data)
            record.path = store.uri(relative)

    def _check_sizes(self, experiment: RunSpec, step: PipelineStep, ctx: FrozenContext) -> None:
        limit = self.max_artifact_bytes
        assert limit is not None
        for record in ctx.artifacts:
            if record.step_name == step.name and record.path is None and len(record.data) > limit:
                raise ValidationError(
                    f"Experiment '{getattr(experiment, 'name', '?')}': step '{step.name}' added artifact "
                    f"'{record.name}' of {len(record.data)} bytes (condition '{ctx.get('condition')}', replicate "
                    f"{ctx.get('replicate')}), over the limit ArtifactPlugin(max_artifact_bytes={limit}); "
                    "store less, or raise the limit."
                )

    def store_from_driver(self, outcome: ReplicateOutcome) -> None:
        """Write artifacts whose bytes came back in ``outcome`` (workers could not reach the store)."""
        if self.experiment_id is None or self.version is None:
            return
        store = self._worker_store()
        for index, entry in enumerate(outcome.artifacts):
            if entry.data is None:
                continue
            relative = layout.artifact(
                self.experiment_id, self.version, outcome.replicate, outcome.condition, entry.step, entry.name
            )
            store.write_bytes(relative, entry.data)
            outcome.artifacts[index] = replace(entry, path=store.uri(relative), data=None)

    def _worker_store(self) -> Store:
        """One Store (and so one filesystem client) per process, made on first use."""
        if self._store_cache is None:
            self._store_cache = self.store()
        return self._store_cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store_cache": None}


def load_metrics_table(experiment_dir: str | os.PathLike[str], version: int | None = None) -> tuple[int, Any]:
    """``(version, table)``: the long-form metrics table (``metrics.parquet``) of a stored run, the
    latest by default; ``RunNotFoundError`` when there is none.

    ``experiment_dir`` may also name the version (``data/exp/v2``); an explicit ``version`` wins.
    """
    where = parse_location(experiment_dir)
    repository = RunRepository(where.store())
    if version is None:
        version = where.version
    if version is None:
        version = repository.latest(where.experiment, require="claim")
        if version is None:
            raise RunNotFoundError(f"no runs stored under {os.fspath(experiment_dir).rstrip('/')}")
    return version, repository.metrics(where.experiment, version)


def _threshold_mb(value: Any) -> float | None:
    """``big_file_threshold_mb`` as given, else from ``$CRYSTALLIZE_BIG_FILE_THRESHOLD_MB`` (as 0.27 read it)."""
    source, given = "big_file_threshold_mb", value
    if value is None:
        source, given = "$CRYSTALLIZE_BIG_FILE_THRESHOLD_MB", os.environ.get("CRYSTALLIZE_BIG_FILE_THRESHOLD_MB")
        if not given:
            return None
        try:
            value = float(given)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValidationError(f"ArtifactPlugin: {source} must be a size in MB (a number >= 0), got {given!r}")
    return value


def load_metrics(
    exp_dir: str | os.PathLike[str], version: int | None = None
) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    """``(version, baseline_metrics, treatment_metrics)`` of a stored run, as Crystallize 0.27 returns them.

    Metrics map a name to its values in replicate order, as JSON gives them back (NumPy values
    as numbers and lists); treatments are sorted by name. ``version`` defaults to the newest
    finished run (``exp_dir`` may also name one: ``data/exp/v2``); a version that holds no
    finished run gives empty metrics, and ``(-1, {}, {})`` means nothing is stored. Read from
    the run records; for the full picture use :func:`crystallize.load_run`, for a table
    :func:`load_metrics_table`.
    """
    repository, experiment, chosen, versions = _versions_to_read(exp_dir, version)
    if chosen is None:
        return -1, {}, {}
    metrics = _condition_metrics(repository, experiment, chosen, versions) or {}
    baseline = metrics.pop(BASELINE_CONDITION, {})
    return chosen, baseline, dict(sorted(metrics.items()))


def load_all_metrics(
    exp_dir: str | os.PathLike[str], version: int | None = None
) -> tuple[int, dict[str, Any], dict[str, tuple[int, dict[str, Any]]]]:
    """``(version, baseline_metrics, {treatment: (its version, its metrics)})``: every treatment's newest
    results across the finished runs up to ``version``, as Crystallize 0.27 returns them.

    ``version`` (default: the newest finished run) gives the baseline; versions are read newest
    first, and a treatment keeps the first (newest) run that has it. ``(-1, {}, {})`` when
    nothing is stored. Values as in :func:`load_metrics`.
    """
    repository, experiment, latest, versions = _versions_to_read(exp_dir, version)
    if latest is None or not versions:
        return -1, {}, {}
    baseline: dict[str, Any] = {}
    treatments: dict[str, tuple[int, dict[str, Any]]] = {}
    for each in sorted((v for v in versions if v <= latest), reverse=True):
        metrics = _condition_metrics(repository, experiment, each, versions)
        if metrics is None:
            continue
        if each == latest:
            baseline = metrics.get(BASELINE_CONDITION, {})
        for name in sorted(metrics):
            if name != BASELINE_CONDITION and name not in treatments:
                treatments[name] = (each, metrics[name])
    return latest, baseline, treatments


def _versions_to_read(
    exp_dir: str | os.PathLike[str], version: int | None
) -> tuple[RunRepository, str, int | None, list[int]]:
    """The repository, the experiment, the version asked for (None: nothing stored) and every version there."""
    where = parse_location(exp_dir)
    repository = RunRepository(where.store())
    versions = repository.versions(where.experiment)
    if version is None:
        version = where.version
    if version is None:
        version = repository.latest(where.experiment, require="record")
    else:
        version = _version_number(version)
    return repository, where.experiment, version, versions


def _version_number(version: Any) -> int:
    """``version`` as an int (NumPy integers too); a ``ValidationError`` for anything else, booleans included."""
    number = None
    if not isinstance(version, bool):
        try:
            number = operator.index(version)
        except TypeError:
            pass
    if number is None:
        raise ValidationError(f"version must be a version number (the N of v<N>), got {version!r}")
    return number


def _condition_metrics(
    repository: RunRepository, experiment: str, version: int, versions: list[int]
) -> dict[str, dict[str, Any]] | None:
    """Per condition, its metrics as JSON values; None when the version holds no finished run."""
    if version not in versions:
        return None
    metrics = finished_metrics(repository, experiment, version)
    if metrics is None:
        return None
    return {condition: legacy_files.plain(values) for condition, values in metrics.items()}
