"""Driver side: fold outcomes as they arrive, then verify hypotheses and build the Result."""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cli_hints import all_errors_hint
from ..constants import BASELINE_CONDITION
from ..results import ExperimentMetrics, HypothesisResult, Result, TreatmentMetrics
from ..stats.adjust import adjust_results
from .plan import ArtifactEntry, ErrorRecord, ReplicateOutcome, ensure_storable

logger = logging.getLogger(__name__)


@dataclass
class _ConditionFold:
    """Columnar per-condition store: bounded overhead per value, not per outcome object."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    value_replicates: dict[str, array] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    errors: dict[int, ErrorRecord] = field(default_factory=dict)
    seeds: dict[int, int | None] = field(default_factory=dict)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    step_stats: dict[str, list[float]] = field(default_factory=dict)
    cache_hits: list[tuple[int, str]] = field(default_factory=list)
    reads: set[str] = field(default_factory=set)

    def add(self, outcome: ReplicateOutcome) -> None:
        replicate = outcome.replicate
        self.seeds[replicate] = outcome.seed
        if outcome.reads:
            self.reads.update(outcome.reads)
        if outcome.error is not None:
            self.errors[replicate] = outcome.error
        else:
            self.finished.add(replicate)
            values, value_replicates = self.values, self.value_replicates
            for name, items in outcome.metrics.items():
                known = values.get(name)
                if known is None:
                    known = values[name] = []
                    value_replicates[name] = array("q")
                known.extend(items)
                if len(items) == 1:
                    value_replicates[name].append(replicate)
                else:
                    value_replicates[name].extend([replicate] * len(items))
        if outcome.artifacts:
            self.artifacts.extend(outcome.artifacts)
        step_stats = self.step_stats
        for step, seconds, cache_hit in outcome.steps:
            stats = step_stats.get(step)
            if stats is None:
                stats = step_stats[step] = [0, 0, 0.0]
            stats[0] += 1
            stats[2] += seconds
            if cache_hit:
                stats[1] += 1
                self.cache_hits.append((replicate, step))

    def metrics(self) -> TreatmentMetrics:
        """Values sorted by replicate (stable, so repeated values keep their order)."""
        metrics: dict[str, list[Any]] = {}
        replicates: dict[str, list[int]] = {}
        for name, items in self.values.items():
            reps = self.value_replicates[name]
            order = sorted(range(len(items)), key=reps.__getitem__)
            metrics[name] = [items[i] for i in order]
            replicates[name] = [reps[i] for i in order]
        return TreatmentMetrics(metrics=metrics, replicates=replicates)


class RunFold:
    """Accumulates outcomes of one run (or one optimize trial) in completion order."""

    def __init__(self, conditions: Sequence[str], *, log_failures: bool = True) -> None:
        self.conditions = list(conditions)
        self.log_failures = log_failures
        self._folds = {name: _ConditionFold() for name in self.conditions}
        self.completed = 0
        self.failed = 0

    def add_conditions(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._folds:
                self.conditions.append(name)
                self._folds[name] = _ConditionFold()

    def failures(self, condition: str) -> int:
        return len(self._folds[condition].errors)

    def add(self, outcome: ReplicateOutcome) -> None:
        # A metric value a run record cannot hold exactly fails the replicate here, in place, so the
        # Result and the record (written from the same object after this) both show it failed.
        ensure_storable(outcome)
        self._folds[outcome.condition].add(outcome)
        self.completed += 1
        if outcome.error is not None:
            self.failed += 1
            if not self.log_failures:
                pass
            elif self.failed <= 5:
                logger.warning("Replicate failed: %s", outcome.error)
            elif self.failed == 6:
                logger.warning("More replicates failed; %s.", all_errors_hint())

    def unread_treatment_keys(self, conditions: Mapping[str, Any]) -> dict[str, list[str]]:
        """Per treatment, the keys it sets that no replicate of it read (so it changed nothing there)."""
        unread: dict[str, list[str]] = {}
        for name, treatment in conditions.items():
            fold = self._folds.get(name)
            if treatment is None or fold is None or not treatment.is_mapping or not (fold.finished or fold.errors):
                continue
            missing = [key for key in treatment.apply_map if key not in fold.reads]
            if missing:
                unread[name] = missing
        return unread

    def condition_metrics(self, condition: str) -> TreatmentMetrics:
        return self._folds[condition].metrics()

    def mean(self, condition: str, metric: str) -> float:
        """Mean of ``metric`` over the condition's successful replicates (NaN when none)."""
        values = self._folds[condition].values.get(metric, [])
        numbers = [float(v) for v in values]
        return math.fsum(numbers) / len(numbers) if numbers else math.nan

    def build_result(
        self,
        hypotheses: Iterable[Any],
        replicates: int,
        provenance: Mapping[str, Any],
    ) -> Result:
        per_condition = {name: fold.metrics() for name, fold in self._folds.items()}
        baseline = per_condition.get(BASELINE_CONDITION, TreatmentMetrics(metrics={}))
        treatments = {n: m for n, m in per_condition.items() if n != BASELINE_CONDITION}
        hypothesis_results = [self._verify(hyp, baseline, treatments, replicates) for hyp in hypotheses]
        errors = {name: fold.errors for name, fold in self._folds.items() if fold.errors}
        artifacts = {name: fold.artifacts for name, fold in self._folds.items() if fold.artifacts}
        full_provenance = dict(provenance)
        # 0.27's shape: the replicate seeds of each condition, as a list in replicate order.
        full_provenance["seeds"] = {name: _seed_list(fold.seeds) for name, fold in self._folds.items()}
        full_provenance["seeds_by_replicate"] = {
            name: dict(sorted(fold.seeds.items())) for name, fold in self._folds.items()
        }
        full_provenance["steps"] = {
            name: {
                step: {"runs": int(s[0]), "cache_hits": int(s[1]), "seconds": s[2]}
                for step, s in fold.step_stats.items()
            }
            for name, fold in self._folds.items()
        }
        full_provenance["cache_hits"] = {name: fold.cache_hits for name, fold in self._folds.items() if fold.cache_hits}
        full_provenance["replicates_completed"] = {name: len(fold.finished) for name, fold in self._folds.items()}
        full_provenance["replicates_failed"] = {name: len(fold.errors) for name, fold in self._folds.items()}
        return Result(
            metrics=ExperimentMetrics(baseline=baseline, treatments=treatments, hypotheses=hypothesis_results),
            artifact_entries=artifacts,
            replicate_errors=errors,
            provenance=full_provenance,
        )

    def _verify(
        self,
        hyp: Any,
        baseline: TreatmentMetrics,
        treatments: Mapping[str, TreatmentMetrics],
        replicates: int,
    ) -> HypothesisResult:
        results: dict[str, Any] = {}
        dropped: dict[str, int] = {}
        errors: dict[str, str] = {}
        baseline_ok = self._folds.get(BASELINE_CONDITION, _ConditionFold()).finished
        for name, tm in treatments.items():
            paired = baseline_ok & self._folds[name].finished
            dropped[name] = replicates - len(paired)
            try:
                results[name] = hyp.verify(
                    _paired_samples(baseline, paired),
                    _paired_samples(tm, paired),
                    treatment_name=name,
                )
            except Exception as exc:  # noqa: BLE001 - one bad comparison must not hide the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                logger.warning("Hypothesis '%s' could not be verified for '%s': %s", hyp.name, name, exc)
        ranking = hyp.rank_treatments(results)  # from the raw results: adjustment never changes the ranking
        results = adjust_results(results, getattr(hyp, "adjust", "holm"))
        if any(dropped.values()):
            logger.info("Hypothesis '%s': pairs dropped because a side failed: %s", hyp.name, dropped)
        return HypothesisResult(name=hyp.name, results=results, ranking=ranking, dropped_pairs=dropped, errors=errors)


def _paired_samples(tm: TreatmentMetrics, paired: set[int]) -> dict[str, list[Any]]:
    return {
        name: [v for r, v in zip(tm.replicates[name], values, strict=True) if r in paired]
        for name, values in tm.metrics.items()
    }


def _seed_list(seeds: dict[int, int | None]) -> list[int | None]:
    """Seeds indexed by replicate (``None`` for a replicate that has no outcome)."""
    return [seeds.get(r) for r in range(max(seeds) + 1)] if seeds else []
