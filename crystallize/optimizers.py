"""Ask/tell search over treatments, with built-in grid and random search.

The experiment runs every treatment of one ``ask()`` side by side (times
``replicates_per_trial``), then calls ``tell()`` with the mean objective per
treatment: ``{objective.metric: mean}`` when one treatment was asked, else
``{treatment.name: mean}``.

What is searched depends only on the optimizer's configuration and seed, never on
the machine: the built-ins propose ``batch_size`` candidates per ``ask()`` (one by
default), whatever the executor or CPU count. ``optimize(num_trials=n)`` makes ``n``
``ask()`` rounds, as in Crystallize 0.27, so it tries up to ``n * batch_size`` candidates.
"""

from __future__ import annotations

import itertools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import OptimizerError, ParameterError, ValidationError
from .treatment import Treatment

_DIRECTIONS = ("minimize", "maximize")


@dataclass
class Objective:
    """Which metric to optimise (its mean over replicates) and in which direction."""

    metric: str
    direction: str = "minimize"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str):
            raise ParameterError("Objective.metric must be one metric name (multi-objective search is not supported)")
        if self.direction not in _DIRECTIONS:
            raise ValidationError(f"Objective.direction must be 'minimize' or 'maximize', got {self.direction!r}")

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b``; NaN never wins."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.direction == "minimize" else a > b


class TrialHistory(list):  # type: ignore[type-arg]
    """The rows ``optimize()`` records, one per candidate. Its own type, so the experiment can tell
    its rows from a ``history`` a user's optimizer keeps for itself, and never overwrite that one."""


class BaseOptimizer(ABC):
    """Strategy contract: ``ask`` proposes treatments, ``tell`` receives their scores."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    @property
    def history(self) -> list[dict[str, Any]]:
        """The trials of the last ``optimize()``: one row per candidate (``trial``, ``candidate``,
        ``params``, ``objective``, ``replicates``, ``seconds``, ``status``), set by the experiment.

        A property, so an optimizer that never calls ``BaseOptimizer.__init__`` has one too. An
        optimizer that assigns its own ``history`` keeps it: the experiment then leaves it alone."""
        return self.__dict__.setdefault("_trial_history", TrialHistory())

    @history.setter
    def history(self, rows: list[Any]) -> None:
        self.__dict__["_trial_history"] = rows

    @abstractmethod
    def ask(self) -> list[Treatment]:
        """Treatments for the next trial; an empty list ends the search early."""

    @abstractmethod
    def tell(self, objective_values: dict[str, float]) -> None:
        """Scores of the treatments from the last ``ask``."""

    @abstractmethod
    def get_best_treatment(self) -> Treatment:
        """The best treatment seen so far."""


class _BatchedOptimizer(BaseOptimizer):
    """Shared bookkeeping for the built-ins: batches of candidates, best-so-far."""

    def __init__(self, objective: Objective, batch_size: int, name_prefix: str) -> None:
        super().__init__(objective)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self._name_prefix = name_prefix
        self._issued = 0
        self._pending: list[Treatment] = []
        self._scored: list[tuple[Treatment, float]] = []  # what tell() heard, for get_best_treatment

    def _batch(self) -> int:
        return self.batch_size

    def _make_treatment(self, params: Mapping[str, Any]) -> Treatment:
        treatment = Treatment(f"{self._name_prefix}_{self._issued}", dict(params))
        self._issued += 1
        return treatment

    def tell(self, objective_values: dict[str, float]) -> None:
        if not self._pending:
            raise OptimizerError("tell() called without a preceding ask()")
        if len(self._pending) == 1 and self.objective.metric in objective_values:
            scores = {self._pending[0].name: objective_values[self.objective.metric]}
        else:
            scores = objective_values
        for treatment in self._pending:
            if treatment.name in scores:
                self._scored.append((treatment, float(scores[treatment.name])))
        self._pending = []

    def get_best_treatment(self) -> Treatment:
        if not self._scored:
            raise OptimizerError("no trial has been scored yet; run optimize() first")
        best, best_score = self._scored[0]
        for treatment, score in self._scored[1:]:
            if self.objective.better(score, best_score):
                best, best_score = treatment, score
        return best


class GridSearchOptimizer(_BatchedOptimizer):
    """Every combination of ``param_grid``, in order, ``batch_size`` per ``ask()`` (default 1)."""

    def __init__(
        self,
        param_grid: Mapping[str, Sequence[Any]],
        objective: Objective,
        *,
        batch_size: int = 1,
    ) -> None:
        super().__init__(objective, batch_size, "grid")
        if not param_grid:
            raise ValidationError("param_grid must name at least one parameter")
        keys = list(param_grid)
        self._combinations = [
            dict(zip(keys, values, strict=True)) for values in itertools.product(*param_grid.values())
        ]
        self._cursor = 0

    def __len__(self) -> int:
        return len(self._combinations)

    def ask(self) -> list[Treatment]:
        chunk = self._combinations[self._cursor : self._cursor + self._batch()]
        self._cursor += len(chunk)
        self._pending = [self._make_treatment(params) for params in chunk]
        return list(self._pending)


class RandomSearchOptimizer(_BatchedOptimizer):
    """Samples from ``space``: a list is a choice, a ``(low, high)`` tuple a uniform range
    (integers if both ends are ints), a callable ``f(rng)`` anything else.

    ``batch_size`` candidates per ``ask()`` (default 1), drawn from ``seed``, so the
    same seed searches the same candidates in the same order on every machine."""

    def __init__(
        self,
        space: Mapping[str, Any],
        objective: Objective,
        *,
        num_samples: int | None = None,
        batch_size: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(objective, batch_size, "random")
        if not space:
            raise ValidationError("space must name at least one parameter")
        self.space = dict(space)
        self.num_samples = num_samples
        self._rng = random.Random(seed)

    def _sample(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, domain in self.space.items():
            params[key] = _sample_domain(key, domain, self._rng)
        return params

    def ask(self) -> list[Treatment]:
        count = self._batch()
        if self.num_samples is not None:
            count = min(count, self.num_samples - self._issued)
        self._pending = [self._make_treatment(self._sample()) for _ in range(max(0, count))]
        return list(self._pending)


def _sample_domain(key: str, domain: Any, rng: random.Random) -> Any:
    if callable(domain):
        return domain(rng)
    if isinstance(domain, tuple) and len(domain) == 2:
        low, high = domain
        if isinstance(low, int) and isinstance(high, int):
            return rng.randint(low, high)
        return rng.uniform(float(low), float(high))
    if isinstance(domain, Sequence) and not isinstance(domain, str) and len(domain) > 0:
        return rng.choice(list(domain))
    raise ValidationError(
        f"search space entry '{key}' must be a non-empty list, a (low, high) tuple or a callable(rng)"
    )
