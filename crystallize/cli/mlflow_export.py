"""``crystallize export RUN --mlflow URI``: each condition of a stored run as one MLflow run.

MLflow is optional (``pip install "crystallize-ray[mlflow]"``) and imported only when an
export is asked for. Everything goes through one ``MlflowClient(tracking_uri=URI)``: no
global MLflow state (``mlflow.set_tracking_uri``, active runs) is touched.

What one MLflow run holds (its name is the condition's):

- params: the condition's treatment parameters (read with ``crystallize.provenance.treatment_params``:
  the typed values of new runs and the ``repr`` strings of old ones give the same text) and
  ``crystallize.replicates``, ``crystallize.root_seed``, ``crystallize.seed_stream``;
- metrics: every recorded value at ``step`` = its replicate index; ``<metric>/mean``,
  ``<metric>/std``, ``<metric>/ci95_low``, ``<metric>/ci95_high``, ``<metric>/n``; each
  hypothesis's numeric results for this treatment as ``<hypothesis>/<key>`` (``p_value``,
  ``p_value_adjusted``, ``effect_size``, ..., booleans as 0/1, ``<hypothesis>/rank``);
- artifacts: the condition's stored artifact files under ``replicate_<i>/<step>/<name>``
  (local stores; for a remote store the files stay where they are and the tag
  ``crystallize.artifacts_uri`` says where), ``crystallize/artifacts.json`` (every copy with
  its size and checksum) and ``crystallize/run.json`` (the run's provenance);
- tags: ``crystallize.experiment``, ``.version``, ``.condition``, ``.crystallize_version``,
  ``.git_commit``, ``.git_dirty``, ``.executor``, ``.source`` (the stored run's location) and
  MLflow's own ``mlflow.source.git.commit`` when the commit is known.

Re-exporting never duplicates: each MLflow run carries ``crystallize.run_key`` (experiment,
version, location, condition) and ``crystallize.digest`` (of everything logged). A run whose
key and digest match is left as it is ("unchanged"); one whose content changed (a resumed run
gained replicates, an export was interrupted) is deleted (MLflow's soft delete: restorable)
and logged anew ("replaced"), because MLflow params cannot be overwritten and metrics only
append.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from ..constants import BASELINE_CONDITION
from ..errors import TargetError
from ..provenance import treatment_functions, treatment_params
from ..result_tree import artifact_replicate
from ..results import Result
from .tables import failed_conditions, summarize

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "crystallize-ray[mlflow]"'
TAG_PREFIX = "crystallize."
RUN_KEY_TAG = "crystallize.run_key"
DIGEST_TAG = "crystallize.digest"

# MLflow's limits (mlflow.utils.validation), repeated so this module imports without MLflow.
_METRICS_PER_BATCH = 1000
_PARAMS_TAGS_PER_BATCH = 100
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_SQL_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")  # what MLflow accepts in a key on every platform


class MlflowNotInstalledError(TargetError, ImportError):
    """MLflow is missing; the message names the extra to install (exit code 2, as for ``--plot``)."""


@dataclass
class ExportedRun:
    """One condition's MLflow run and what happened to it."""

    condition: str
    run_id: str
    action: str  # "created" | "replaced" | "unchanged"
    metrics: int  # metric values (per-replicate, summary and hypothesis)
    params: int
    artifacts: int  # files copied into MLflow


@dataclass
class MlflowExport:
    """What ``export_to_mlflow`` did, for the command to print."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    runs: list[ExportedRun] = field(default_factory=list)
    skipped_values: int = 0  # non-numeric metric values MLflow cannot hold

    def count(self, action: str) -> int:
        return sum(1 for run in self.runs if run.action == action)


@dataclass
class _Payload:
    """Everything one MLflow run gets, made before anything is sent (so it can be digested)."""

    condition: str
    params: dict[str, str]
    metrics: list[tuple[str, float, int]]  # (key, value, step)
    tags: dict[str, str]
    files: list[tuple[str, str]]  # (local path, artifact folder inside the MLflow run)
    manifest: list[dict[str, Any]]
    failed: bool

    def digest(self) -> str:
        checksums = [(entry["artifact_path"], entry["checksum"]) for entry in self.manifest]
        content = {
            "params": self.params,
            "metrics": [[k, _json_number(v), s] for k, v, s in self.metrics],
            "tags": self.tags,
            "files": checksums,
            "failed": self.failed,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowNotInstalledError(f"--mlflow needs MLflow, which is not installed: {INSTALL_HINT} ({exc})") from exc
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in _SQL_SCHEMES:
        for module in ("sqlalchemy", "alembic"):  # MLflow's SQL store needs both; skinny brings neither
            try:
                __import__(module)
            except ImportError as exc:
                raise MlflowNotInstalledError(
                    f"an MLflow {scheme}:// tracking store needs '{module}', which is not installed: {INSTALL_HINT}"
                ) from exc
    return MlflowClient(tracking_uri=tracking_uri)


def export_to_mlflow(
    result: Result,
    tracking_uri: str,
    *,
    experiment_name: str | None = None,
    location: str | None = None,
) -> MlflowExport:
    """Log every condition of ``result`` as one run of MLflow experiment ``experiment_name``
    (default: our experiment's name) in the tracking store at ``tracking_uri``.

    ``location`` is where the run is stored (it tells two runs with the same experiment and
    version apart, and lands in the ``crystallize.source`` tag).
    """
    client = _client(tracking_uri)
    provenance = result.provenance
    name = experiment_name or str(provenance.get("experiment") or "crystallize")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        ours = str(provenance.get("experiment") or name)
        experiment_id = client.create_experiment(name, tags={f"{TAG_PREFIX}experiment": _tag_text(ours)})
    elif experiment.lifecycle_stage != "active":
        raise TargetError(
            f"MLflow experiment '{name}' is deleted in {tracking_uri}; restore it or choose another "
            "with --mlflow-experiment NAME"
        )
    else:
        experiment_id = experiment.experiment_id
    export = MlflowExport(tracking_uri=tracking_uri, experiment_name=name, experiment_id=str(experiment_id))
    source = location or ""
    for condition, tm in result.metrics.conditions():
        payload, skipped = _payload(result, condition, tm, source)
        export.skipped_values += skipped
        export.runs.append(_log_condition(client, str(experiment_id), payload, provenance))
    return export


# ---------------------------------------------------------------- what a run holds


def _payload(result: Result, condition: str, tm: Any, source: str) -> tuple[_Payload, int]:
    provenance = result.provenance
    params = _params(provenance, condition)
    metrics, skipped = _replicate_metrics(tm)
    metrics.extend(_summary_metrics(tm))
    metrics.extend(_hypothesis_metrics(result, condition))
    files, manifest, remote = _artifact_files(result, condition)
    tags = _tags(provenance, condition, source)
    tags.update(_hypothesis_tags(result, condition))
    if remote:
        tags[f"{TAG_PREFIX}artifacts_uri"] = _tag_text(remote)
    tags[f"{TAG_PREFIX}failed_replicates"] = str(len(result.replicate_errors.get(condition, {})))
    failed = condition in failed_conditions(result)  # every replicate that ran failed
    key_text = json.dumps(
        [provenance.get("experiment"), provenance.get("version"), source, condition], separators=(",", ":")
    )
    tags[RUN_KEY_TAG] = hashlib.sha256(key_text.encode()).hexdigest()[:32]
    payload = _Payload(condition, params, metrics, tags, files, manifest, failed)
    return payload, skipped


def _params(provenance: Mapping[str, Any], condition: str) -> dict[str, str]:
    params = {_key(key): _param_text(value) for key, value in treatment_params(provenance).get(condition, {}).items()}
    for key, value in (
        ("replicates", provenance.get("replicates")),
        ("root_seed", provenance.get("root_seed")),
        ("seed_stream", provenance.get("seed_stream", "main")),
    ):
        if value is not None:
            params.setdefault(f"{TAG_PREFIX}{key}", _param_text(value))
    return params


def _param_text(value: Any) -> str:
    """A typed treatment value as MLflow shows it: ``1.0``, ``big``, ``[1, 2]``, a repr for the rest."""
    if isinstance(value, Mapping) and set(value) == {"repr", "type"}:  # a value JSON cannot hold
        text = str(value["repr"])
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM_VALUE]


def _replicate_metrics(tm: Any) -> tuple[list[tuple[str, float, int]], int]:
    metrics: list[tuple[str, float, int]] = []
    skipped = 0
    for name, values in tm.metrics.items():
        replicates = tm.replicates.get(name) or list(range(len(values)))
        key = _key(name)
        for replicate, value in zip(replicates, values, strict=False):
            number = _number(value)
            if number is None:
                skipped += 1
                continue
            metrics.append((key, number, int(replicate)))
    return metrics, skipped


def _summary_metrics(tm: Any) -> list[tuple[str, float, int]]:
    """n, mean, sample std and the 95% interval of the mean, as ``crystallize show`` computes them."""
    metrics: list[tuple[str, float, int]] = []
    for name, values in tm.metrics.items():
        numbers_ = [n for n in (_number(v) for v in values) if n is not None]
        if not numbers_:
            continue
        key = _key(name)
        if all(math.isfinite(n) for n in numbers_):
            summary = summarize(numbers_)
            metrics.append((f"{key}/mean", summary.mean, 0))
            if summary.n > 1:
                metrics.append((f"{key}/std", summary.std, 0))
                metrics.append((f"{key}/ci95_low", summary.low, 0))
                metrics.append((f"{key}/ci95_high", summary.high, 0))
        else:  # NaN or infinite values: the mean says so, a spread would be meaningless
            metrics.append((f"{key}/mean", sum(numbers_) / len(numbers_), 0))
        metrics.append((f"{key}/n", float(len(numbers_)), 0))
    return metrics


def _hypothesis_results(result: Result, condition: str) -> Iterator[tuple[str, Any, Any]]:
    """``(prefix, hypothesis, mapping or value)`` for each result this treatment has."""
    for hypothesis in result.metrics.hypotheses:
        outcome = hypothesis.results.get(condition)
        prefix = _key(hypothesis.name)
        if isinstance(outcome, Sequence) and not isinstance(outcome, (str, bytes)):  # several metric groups
            for index, item in enumerate(outcome):
                label = item.get("metric") if isinstance(item, Mapping) else None
                yield f"{prefix}/{_key(str(label)) if isinstance(label, str) else index}", hypothesis, item
        elif outcome is not None:
            yield prefix, hypothesis, outcome


def _hypothesis_metrics(result: Result, condition: str) -> list[tuple[str, float, int]]:
    metrics: list[tuple[str, float, int]] = []
    for prefix, _hypothesis, outcome in _hypothesis_results(result, condition):
        if isinstance(outcome, Mapping):
            for key, value in outcome.items():
                number = _number(value)
                if number is not None:
                    metrics.append((f"{prefix}/{_key(str(key))}", number, 0))
        else:
            number = _number(outcome)
            if number is not None:
                metrics.append((f"{prefix}/result", number, 0))
    for hypothesis in result.metrics.hypotheses:
        prefix = _key(hypothesis.name)
        ranked = hypothesis.ranking.get("ranked") if isinstance(hypothesis.ranking, Mapping) else None
        for position, entry in enumerate(ranked or []):
            if isinstance(entry, Sequence) and entry and entry[0] == condition:
                metrics.append((f"{prefix}/rank", float(position + 1), 0))
        dropped = hypothesis.dropped_pairs.get(condition)
        if isinstance(dropped, int):
            metrics.append((f"{prefix}/dropped_pairs", float(dropped), 0))
    return metrics


def _hypothesis_tags(result: Result, condition: str) -> dict[str, str]:
    """The text parts of each hypothesis result (test name, effect name, note) and its errors."""
    tags: dict[str, str] = {}
    for prefix, _hypothesis, outcome in _hypothesis_results(result, condition):
        if isinstance(outcome, Mapping):
            for key, value in outcome.items():
                if isinstance(value, str):
                    tags[_key(f"{TAG_PREFIX}hypothesis.{prefix}.{key}")] = _tag_text(value)
    for hypothesis in result.metrics.hypotheses:
        error = hypothesis.errors.get(condition)
        if error:
            tags[_key(f"{TAG_PREFIX}hypothesis.{hypothesis.name}.error")] = _tag_text(str(error))
    return tags


def _tags(provenance: Mapping[str, Any], condition: str, source: str) -> dict[str, str]:
    git = _mapping(provenance.get("git"))
    executor = _mapping(provenance.get("executor"))
    commit = git.get("commit")
    dirty = git.get("dirty")
    tags = {
        "experiment": provenance.get("experiment"),
        "version": provenance.get("version"),
        "condition": condition,
        "mode": provenance.get("mode"),
        "crystallize_version": provenance.get("crystallize_version"),
        "git_commit": commit if commit else "unknown",
        "git_dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
        "executor": executor.get("executor") or "unknown",
        "executor.nodes": executor.get("nodes"),
        "executor.cpus": executor.get("cpus"),
        "source": source or None,
        "pipeline_fingerprint": provenance.get("pipeline_fingerprint"),
        "treatment": _callable_treatment(provenance, condition),
    }
    versions = provenance.get("versions")
    if isinstance(versions, Mapping):
        tags.update({f"versions.{k}": v for k, v in versions.items()})
    host = provenance.get("host")
    if isinstance(host, Mapping):
        tags.update({f"host.{k}": v for k, v in host.items()})
    out = {_key(f"{TAG_PREFIX}{k}"): _tag_text(str(v)) for k, v in tags.items() if v is not None}
    if commit:
        out["mlflow.source.git.commit"] = _tag_text(str(commit))  # MLflow's UI shows this one
    return out


def _callable_treatment(provenance: Mapping[str, Any], condition: str) -> str | None:
    """A treatment written as a function is stored by its name: that name, as a tag."""
    return treatment_functions(provenance).get(condition) if condition != BASELINE_CONDITION else None


def _artifact_files(result: Result, condition: str) -> tuple[list[tuple[str, str]], list[dict[str, Any]], str]:
    """Local files to copy, the manifest of every copy, and the remote store's URI ('' if local)."""
    files: list[tuple[str, str]] = []
    manifest: list[dict[str, Any]] = []
    remote = ""
    for position, entry in enumerate(result.artifact_entries.get(condition, [])):
        if entry.path is None:
            continue
        replicate = artifact_replicate(entry.path, position)
        folder = f"replicate_{replicate}/{_key(entry.step)}"
        local = _local_path(entry.path)
        manifest.append(
            {
                "name": entry.name,
                "step": entry.step,
                "replicate": replicate,
                "size": entry.size,
                "checksum": entry.checksum,
                "stored_at": entry.path,
                "artifact_path": f"{folder}/{entry.name}" if local else None,
            }
        )
        if local is not None:
            files.append((local, folder))
        elif not remote:
            remote = _run_folder(entry.path)
    return files, manifest, remote


def _local_path(stored: str) -> str | None:
    parsed = urlparse(stored)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme and len(parsed.scheme) > 1:  # s3://, gs://, ... (a one-letter scheme is a Windows drive)
        return None
    return stored


def _run_folder(stored: str) -> str:
    """``s3://b/exp/v0/replicate_0/cond/step/name`` -> ``s3://b/exp/v0`` (where the run's files are)."""
    parts = stored.rstrip("/").split("/")
    return "/".join(parts[:-4]) if len(parts) > 4 else stored


# ---------------------------------------------------------------- logging one run


def _log_condition(client: Any, experiment_id: str, payload: _Payload, provenance: Mapping[str, Any]) -> ExportedRun:
    from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType

    digest = payload.digest()
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{payload.tags[RUN_KEY_TAG]}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    for run in found:
        if run.data.tags.get(DIGEST_TAG) == digest:
            return ExportedRun(payload.condition, run.info.run_id, "unchanged", 0, 0, 0)
    for run in found:  # an older or unfinished export of the same condition: replaced as a whole
        client.delete_run(run.info.run_id)
    action = "replaced" if found else "created"

    started = _milliseconds(provenance.get("started_at"))
    finished = _milliseconds(provenance.get("finished_at")) or started
    run = client.create_run(experiment_id, start_time=started, run_name=payload.condition)
    run_id = run.info.run_id
    stamp = finished or int(time.time() * 1000)
    params = [Param(k, v) for k, v in payload.params.items()]
    tags = [RunTag(k, v) for k, v in payload.tags.items()]
    metrics = [Metric(k, v, stamp, s) for k, v, s in payload.metrics]
    for chunk in _chunks(params, _PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)
    for chunk in _chunks(tags, _PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)
    for chunk in _chunks(metrics, _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)
    for local, folder in payload.files:
        client.log_artifact(run_id, local, artifact_path=folder)
    if payload.manifest:
        client.log_dict(run_id, {"artifacts": payload.manifest}, "crystallize/artifacts.json")
    client.log_dict(run_id, _jsonable(dict(provenance)), "crystallize/run.json")
    status = RunStatus.to_string(RunStatus.FAILED if payload.failed else RunStatus.FINISHED)
    client.set_terminated(run_id, status=status, end_time=finished)
    client.set_tag(run_id, DIGEST_TAG, digest, synchronous=True)  # last: only a complete export has it
    logger.debug("MLflow run %s for condition '%s' %s", run_id, payload.condition, action)
    return ExportedRun(payload.condition, run_id, action, len(metrics), len(params), len(payload.files))


# ---------------------------------------------------------------- small helpers


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _number(value: Any) -> float | None:
    """A metric value MLflow can hold (numbers, numpy scalars, booleans as 0/1), else None."""
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)  # a 0-d numpy array
    if callable(item) and getattr(value, "shape", None) == ():
        inner = item()
        return float(inner) if isinstance(inner, numbers.Real) else None
    return None


def _key(name: str) -> str:
    """``name`` as a key MLflow accepts: other characters become ``_``, no empty or dot parts."""
    cleaned = _BAD_NAME_CHARS.sub("_", name)
    parts = [part for part in cleaned.split("/") if part not in ("", ".", "..")]
    key = "/".join(parts) or "_"
    if key != name:
        logger.debug("MLflow key %r stands for %r", key, name)
    return key[:_MAX_KEY]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tag_text(value: str) -> str:
    return value[:_MAX_TAG_VALUE]


def _json_number(value: float) -> Any:
    return value if math.isfinite(value) else str(value)


def _milliseconds(stamp: Any) -> int | None:
    if not isinstance(stamp, str):
        return None
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def summary_lines(export: MlflowExport) -> list[str]:
    """What the command prints: one line for the export, one per MLflow run."""
    metrics = sum(run.metrics for run in export.runs)
    files = sum(run.artifacts for run in export.runs)
    lines = [
        f"logged {len(export.runs)} MLflow run(s) to {export.tracking_uri}, experiment '{export.experiment_name}' "
        f"(id {export.experiment_id}): {export.count('created')} created, {export.count('replaced')} replaced, "
        f"{export.count('unchanged')} unchanged; {metrics} metric value(s), {files} artifact file(s)"
    ]
    for run in export.runs:
        detail = "" if run.action == "unchanged" else f": {run.metrics} metric value(s), {run.params} param(s)"
        lines.append(f"  {run.condition}: run {run.run_id} ({run.action}){detail}")
    if export.skipped_values:
        lines.append(f"  {export.skipped_values} non-numeric metric value(s) left out (MLflow metrics are numbers)")
    return lines
