"""What a run returns: metrics per condition, hypothesis results, errors, provenance."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .engine.plan import ArtifactEntry, ErrorRecord
from .errors import ReplicateError
from .result_tree import artifact_replicate, print_tree


@dataclass
class TreatmentMetrics:
    """One condition's metrics: ``metrics[name]`` lists values in replicate order.

    ``replicates[name]`` gives the replicate each value came from (a step may
    record a metric more than once per replicate).
    """

    metrics: dict[str, list[Any]]
    replicates: dict[str, list[int]] = field(default_factory=dict)

    def by_replicate(self, name: str) -> dict[int, list[Any]]:
        grouped: dict[int, list[Any]] = {}
        for replicate, value in zip(self.replicates.get(name, []), self.metrics.get(name, []), strict=False):
            grouped.setdefault(replicate, []).append(value)
        return grouped


@dataclass
class HypothesisResult:
    """``results[treatment]`` is the verifier's output; ``ranking`` orders treatments by the ranker.

    ``dropped_pairs[treatment]`` counts replicates left out of the paired
    comparison because the baseline or the treatment failed there.
    """

    name: str
    results: dict[str, Any]
    ranking: dict[str, Any]
    dropped_pairs: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get_for_treatment(self, treatment: str) -> Any:
        return self.results.get(treatment)


@dataclass
class ExperimentMetrics:
    baseline: TreatmentMetrics
    treatments: dict[str, TreatmentMetrics]
    hypotheses: list[HypothesisResult]

    def conditions(self) -> Iterator[tuple[str, TreatmentMetrics]]:
        from .constants import BASELINE_CONDITION

        yield BASELINE_CONDITION, self.baseline
        yield from self.treatments.items()

    def to_df(self) -> Any:
        import pandas as pd

        rows = []
        for hyp in self.hypotheses:
            for treatment, result in hyp.results.items():
                payload = result if isinstance(result, Mapping) else {"result": result}
                rows.append({"condition": treatment, "hypothesis": hyp.name, **payload})
        return pd.DataFrame(rows)


class Result:
    """The outcome of ``Experiment.run()``.

    ``errors`` and ``artifacts`` have the shapes of earlier releases (``"<condition>_rep_<i>"``
    to an exception; artifact name to ``{condition: path}``). The full picture stays under
    ``replicate_errors[condition][replicate]`` (an :class:`ErrorRecord`: step, exception type,
    message, traceback) and ``artifact_entries[condition]`` (every stored copy, with size and
    checksum).
    """

    def __init__(
        self,
        metrics: ExperimentMetrics,
        artifacts: Mapping[str, Any] | None = None,
        errors: Mapping[str, BaseException] | None = None,
        provenance: Mapping[str, Any] | None = None,
        *,
        replicate_errors: Mapping[str, Mapping[int, ErrorRecord]] | None = None,
        artifact_entries: Mapping[str, list[ArtifactEntry]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.replicate_errors: dict[str, dict[int, ErrorRecord]] = {
            k: dict(v) for k, v in (replicate_errors or {}).items()
        }
        self.artifact_entries: dict[str, list[ArtifactEntry]] = {
            k: list(v) for k, v in (artifact_entries or {}).items()
        }
        self.provenance: dict[str, Any] = dict(provenance or {})
        # Given (or assigned) ones are kept as they are; otherwise made from the records on first use.
        self._errors: dict[str, BaseException] | None = dict(errors) if errors is not None else None
        self._artifacts: dict[str, Any] | None = dict(artifacts) if artifacts is not None else None

    @property
    def errors(self) -> dict[str, BaseException]:
        """``{"<condition>_rep_<i>": exception}`` for every failed replicate.

        The exception is the one the replicate raised (a step's wrapped in a
        :class:`~crystallize.errors.ReplicateError`, which is a ``PipelineExecutionError``) when
        it was caught in this process; otherwise a ``ReplicateError`` rebuilt from its record,
        carrying the original's type name, message and traceback.
        """
        if self._errors is None:
            self._errors = {
                f"{condition}_rep_{replicate}": _as_exception(record, self.provenance.get("experiment"))
                for condition, records in self.replicate_errors.items()
                for replicate, record in sorted(records.items())
            }
        return self._errors

    @errors.setter
    def errors(self, value: Mapping[str, BaseException] | None) -> None:
        self._errors = dict(value or {})

    @property
    def artifacts(self) -> dict[str, Any]:
        """``{artifact name: {condition: path}}``: where each stored artifact is, taken from each
        condition's lowest replicate that wrote it (a ``Path`` on a local store, a URI otherwise)."""
        if self._artifacts is None:
            found: dict[str, dict[str, tuple[int, Any]]] = {}
            for condition, entries in self.artifact_entries.items():
                for position, entry in enumerate(entries):
                    if entry.path is None:
                        continue
                    replicate = artifact_replicate(entry.path, position)
                    best = found.setdefault(entry.name, {}).get(condition)
                    if best is None or replicate < best[0]:
                        found[entry.name][condition] = (replicate, _as_path(entry.path))
            self._artifacts = {name: {c: where for c, (_, where) in by.items()} for name, by in found.items()}
        return self._artifacts

    @artifacts.setter
    def artifacts(self, value: Mapping[str, Any] | None) -> None:
        self._artifacts = dict(value or {})

    def get_hypothesis(self, name: str) -> HypothesisResult | None:
        return next((h for h in self.metrics.hypotheses if h.name == name), None)

    def get_artifact(self, name: str) -> Any:
        """``{condition: path}`` of artifact ``name``, or None when no replicate stored it."""
        return self.artifacts.get(name)

    def artifact_copies(self, name: str) -> list[ArtifactEntry]:
        """Every stored copy of artifact ``name`` (one per replicate and condition)."""
        return [entry for entries in self.artifact_entries.values() for entry in entries if entry.name == name]

    @property
    def warnings(self) -> list[str]:
        """What the run noticed and did not stop for (unread treatment keys, non-reproducible executors)."""
        return list(self.provenance.get("warnings", []))

    @property
    def failed(self) -> int:
        return sum(len(v) for v in self.replicate_errors.values())

    def print_tree(self, fmt: str = "treatment > replicate > step", *, file: IO[str] | None = None) -> None:
        """Print what each replicate did as a tree: condition, replicate, step (in the order ``fmt``
        names them, ``"a > b > c"``; ``"action"`` may close it), with metrics, cache hits,
        artifacts and errors as leaves. Goes to ``file`` (standard output by default)."""
        print_tree(self, fmt, file=file)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary: metrics per condition, hypotheses, artifact names, errors as text."""
        return {
            "timestamp": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
            "metrics": {
                "baseline": {k: list(v) for k, v in self.metrics.baseline.metrics.items()},
                "treatments": {
                    name: {k: list(v) for k, v in tm.metrics.items()} for name, tm in self.metrics.treatments.items()
                },
            },
            "hypotheses": [
                {"name": h.name, "results": h.results, "ranking": h.ranking} for h in self.metrics.hypotheses
            ],
            "artifacts": list(self.artifacts),
            "errors": {key: str(exc) for key, exc in self.errors.items()},
            "provenance": self.provenance,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str | None:
        """``to_dict()`` as JSON text; written to ``path`` (and None returned) when one is given."""
        text = json.dumps(self.to_dict(), indent=indent, default=str)
        if path is None:
            return text
        Path(path).write_text(text, encoding="utf-8")
        return None

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """One row per (condition, metric): ``condition``, ``metric``, ``values`` (a list), ``mean``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        conditions: list[str] = []
        names: list[str] = []
        series: list[list[Any]] = []
        means: list[float | None] = []
        for condition, tm in self.metrics.conditions():
            for name, values in tm.metrics.items():
                conditions.append(condition)
                names.append(name)
                series.append(list(values))
                numbers = all(_is_number(v) for v in values)
                means.append(math.fsum(float(v) for v in values) / len(values) if values and numbers else None)
        try:
            column = pa.array(series)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # values no one Arrow type holds: as JSON text
            column = pa.array([[_json_text(v) for v in values] for values in series], pa.list_(pa.string()))
        table = pa.table(
            {
                "condition": pa.array(conditions, pa.string()),
                "metric": pa.array(names, pa.string()),
                "values": column,
                "mean": pa.array(means, pa.float64()),
            }
        )
        pq.write_table(table, os.fspath(path))

    def _long_rows(self) -> tuple[list[str], list[int], list[str], list[Any]]:
        conditions: list[str] = []
        replicates: list[int] = []
        names: list[str] = []
        values: list[Any] = []
        for condition, tm in self.metrics.conditions():
            for name, series in tm.metrics.items():
                reps = tm.replicates.get(name) or list(range(len(series)))
                conditions.extend([condition] * len(series))
                replicates.extend(reps)
                names.extend([name] * len(series))
                values.extend(series)
        return conditions, replicates, names, values

    def to_arrow(self, *, params: bool = True) -> Any:
        """Metrics in long form: one row per (condition, replicate, metric, value), then one
        ``param.<key>`` column per treatment key (null for the baseline and for a treatment
        without that key; see :func:`param_columns`). ``params=False``: the four columns alone."""
        import pyarrow as pa

        from .store import arrow_columns as cols  # not pyarrow.array: it imports pandas (0.6 s) on first use

        conditions, replicates, names, values = self._long_rows()
        arrays = [cols.strings(conditions), cols.int64s(replicates), cols.strings(names), _value_array(values)]
        columns = ["condition", "replicate", "metric", "value"]
        if params:
            for name, column in param_columns(self.provenance, conditions):
                columns.append(name)
                arrays.append(column)
        return pa.Table.from_arrays(arrays, names=columns)

    def to_pandas(self) -> Any:
        """``to_arrow()`` as a pandas DataFrame; integer and bool ``param.*`` columns keep their type
        beside the baseline's nulls (pandas' nullable ``Int64`` and ``boolean``, not float and object)."""
        import pandas as pd
        import pyarrow as pa

        table = self.to_arrow()
        frame = table.to_pandas()
        nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
        for name in table.column_names[4:]:
            if table.schema.field(name).type in nullable:
                frame[name] = table.column(name).to_pandas(types_mapper=nullable.get)
        return frame

    def trials_dataframe(self) -> Any:
        """An ``optimize()`` run's trials, one row per candidate, as a pandas DataFrame: ``trial, candidate,
        param.<key>..., objective, replicates, seconds, status`` (empty for a ``run()``)."""
        import pandas as pd

        rows = (self.provenance.get("optimization") or {}).get("trials") or []
        keys = list(dict.fromkeys(k for row in rows for k in (row.get("params") or {})))
        records = []
        for row in rows:
            record: dict[str, Any] = {"trial": row.get("trial"), "candidate": row.get("candidate")}
            record.update({f"param.{k}": (row.get("params") or {}).get(k) for k in keys})
            record.update({k: row.get(k) for k in ("objective", "replicates", "seconds", "status")})
            records.append(record)
        columns = ["trial", "candidate", *(f"param.{k}" for k in keys), "objective", "replicates", "seconds", "status"]
        return pd.DataFrame.from_records(records, columns=columns)

    def __repr__(self) -> str:
        counts = {c: len(next(iter(tm.metrics.values()), [])) for c, tm in self.metrics.conditions()}
        return f"Result(conditions={counts}, failed={self.failed})"


# Stages of a replicate that are not steps: an exception raised there is handed back unwrapped.
_NON_STEP_STAGES = ("context", "seed", "before_replicate")
_NON_STEP_PREFIXES = ("treatment:", "datasource:")


def _as_exception(record: ErrorRecord, experiment: str | None = None) -> BaseException:
    """The exception ``Result.errors`` shows for ``record``: the original when it is in memory
    (a step's wrapped in ``ReplicateError``), else a ``ReplicateError`` made from the record."""
    original = record.exception
    in_step = record.stage not in _NON_STEP_STAGES and not record.stage.startswith(_NON_STEP_PREFIXES)
    if original is not None and not in_step:
        for name, value in (
            ("traceback_str", record.traceback),
            ("condition", record.condition),
            ("replicate", record.replicate),
        ):
            try:
                setattr(original, name, value)
            except (AttributeError, TypeError):  # an exception class with slots or read-only attributes
                pass
        return original
    error = ReplicateError(
        record.stage,
        record.exception_type,
        record.message,
        record.traceback,
        condition=record.condition,
        replicate=record.replicate,
        experiment=experiment,
        exception_types=record.exception_types,
        original_exception=original,
    )
    if original is not None:
        error.__cause__ = original
    return error


def _as_path(location: str) -> Any:
    """A local path as ``Path`` (what callers of earlier releases open); a URI stays text."""
    return location if "://" in location else Path(location)


def param_columns(provenance: Mapping[str, Any], conditions: list[str]) -> list[tuple[str, Any]]:
    """``("param.<key>", Arrow array)`` per treatment key, one value per row of ``conditions``.

    A key whose values are all bools is a bool column, all ints an int64 column, all numbers
    (ints and floats) a float64 column, all strings a string column; otherwise (lists, mixed
    types, values JSON cannot hold) each value is its JSON text.
    """
    from .provenance import treatment_params
    from .store import arrow_columns as cols

    params = treatment_params(provenance)
    keys = list(dict.fromkeys(k for values in params.values() for k in values))
    if not keys:
        return []
    names = list(params)
    position = {name: i for i, name in enumerate(names)}
    rows = cols.int64s([position.get(c) for c in conditions])  # null: the baseline, or not a mapping treatment
    out = []
    for key in keys:
        small = _param_array([params[name].get(key) for name in names])
        out.append((f"param.{key}", small.take(rows)))
    return out


def _param_array(values: list[Any]) -> Any:
    """One condition's value per entry (None: it lacks the key), typed when the values share a type."""
    import pyarrow as pa

    from .provenance import is_number
    from .store import arrow_columns as cols

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        if all(-(2**63) <= v < 2**63 for v in present):
            return cols.int64s(values)
    elif present and all(is_number(v) for v in present):
        return cols.float64s([None if v is None else float(v) for v in values])
    elif present and all(isinstance(v, str) for v in present):
        return cols.strings(values)
    return cols.strings([None if v is None else _json_text(v) for v in values])


def _value_array(values: list[Any]) -> Any:
    from .store import arrow_columns as cols

    if all(_is_number(v) for v in values):
        return cols.float64s([float(v) for v in values])
    return cols.strings([_json_text(v) for v in values])


def _json_text(value: Any) -> str:
    """A value as JSON text for the long-form table; its repr (as a JSON string) when JSON cannot hold it
    (dict keys that are tuples, say), so writing the table never fails a finished run."""
    import json

    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _json_default(value: Any) -> Any:
    """NumPy scalars and arrays as JSON numbers and lists (their repr is not JSON)."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return True
    return type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0
