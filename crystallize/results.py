"""What a run returns: metrics per condition, hypothesis results, errors, provenance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .engine.plan import ArtifactEntry, ErrorRecord


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

    ``errors[condition][replicate]`` is an :class:`ErrorRecord` (step, exception
    type, message, traceback) for every replicate that failed.
    """

    def __init__(
        self,
        metrics: ExperimentMetrics,
        artifacts: Mapping[str, list[ArtifactEntry]] | None = None,
        errors: Mapping[str, Mapping[int, ErrorRecord]] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.metrics = metrics
        self.artifacts: dict[str, list[ArtifactEntry]] = dict(artifacts or {})
        self.errors: dict[str, dict[int, ErrorRecord]] = {k: dict(v) for k, v in (errors or {}).items()}
        self.provenance: dict[str, Any] = dict(provenance or {})

    def get_hypothesis(self, name: str) -> HypothesisResult | None:
        return next((h for h in self.metrics.hypotheses if h.name == name), None)

    def get_artifact(self, name: str) -> list[ArtifactEntry]:
        """Every stored copy of artifact ``name`` (one per replicate and condition)."""
        return [entry for entries in self.artifacts.values() for entry in entries if entry.name == name]

    @property
    def warnings(self) -> list[str]:
        """What the run noticed and did not stop for (unread treatment keys, non-reproducible executors)."""
        return list(self.provenance.get("warnings", []))

    @property
    def failed(self) -> int:
        return sum(len(v) for v in self.errors.values())

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

    def to_arrow(self) -> Any:
        """Metrics in long form: one row per (condition, replicate, metric, value)."""
        import pyarrow as pa

        conditions, replicates, names, values = self._long_rows()
        return pa.table(
            {
                "condition": pa.array(conditions, pa.string()),
                "replicate": pa.array(replicates, pa.int64()),
                "metric": pa.array(names, pa.string()),
                "value": _value_array(values),
            }
        )

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def __repr__(self) -> str:
        counts = {c: len(next(iter(tm.metrics.values()), [])) for c, tm in self.metrics.conditions()}
        return f"Result(conditions={counts}, failed={self.failed})"


def _value_array(values: list[Any]) -> Any:
    import pyarrow as pa

    if all(_is_number(v) for v in values):
        return pa.array([float(v) for v in values], pa.float64())
    return pa.array([_json_text(v) for v in values], pa.string())


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
