"""Optuna's samplers (TPE, CMA-ES, random, or any Optuna sampler) behind our ask/tell contract.

Install the extra first: ``pip install "crystallize-ray[optuna]"``. Importing this module
never imports Optuna; building an ``OptunaOptimizer`` does, and says which extra to install
when it is missing.

The study lives on the driver: ``ask()`` takes ``batch_size`` trials from it
(``study.ask``) and turns each into a plain ``Treatment`` named ``optuna_<trial number>``,
so only the treatment (a name and a dict of numbers and strings) travels to the workers.
``tell()`` hands the mean objective back (``study.tell``); a candidate with no numeric
score (every replicate failed, or the metric was never recorded) is told as a failed
trial, which the samplers skip. What is asked therefore depends only on the sampler's
seed and the told values, and those depend only on the experiment's seeds: the same
search on every executor.

The search space maps each context key to an Optuna distribution, or to the short forms:

- ``(low, high)``: a uniform range; whole numbers when both ends are ints
  (``IntDistribution``), else floats (``FloatDistribution``);
- ``(low, high, "log")``: the same on a log scale (both ends > 0);
- ``(low, high, step)``: a range in steps of ``step`` (``(0.0, 1.0, 0.25)``, ``(2, 32, 2)``);
- a list: a choice among its items (``CategoricalDistribution``); items must be
  ``None``, bool, int, float or str, as Optuna stores them.
"""

from __future__ import annotations

import importlib
import logging
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import CrystallizeError, OptimizerError, ParameterError, ValidationError
from .optimizers import BaseOptimizer, Objective
from .treatment import Treatment

if TYPE_CHECKING:
    from types import ModuleType

    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.samplers import BaseSampler

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "crystallize-ray[optuna]"'
SAMPLER_NAMES = ("tpe", "cmaes", "random")
NAME_PREFIX = "optuna"
_CHOICE_TYPES = (type(None), bool, int, float, str)


class OptunaNotInstalledError(CrystallizeError, ImportError):
    """Optuna (or cmaes, for CMA-ES) is missing; an ``ImportError`` too, as callers of optional parts expect."""


def _require(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        raise OptunaNotInstalledError(
            f"{what} needs the '{package}' package, which is not installed: {INSTALL_HINT}"
        ) from exc


def to_distributions(search_space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The search space as Optuna distributions, key by key (the short forms are in the module docstring)."""
    distributions_module = _require("optuna.distributions", "OptunaOptimizer")
    if not isinstance(search_space, Mapping) or not search_space:
        raise ValidationError("search_space must be a non-empty mapping of context key -> range, list or distribution")
    out: dict[str, BaseDistribution] = {}
    for key, domain in search_space.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(f"search_space keys must be context key names (non-empty str), got {key!r}")
        try:
            out[key] = _distribution(key, domain, distributions_module)
        except ValueError as exc:  # Optuna's own check of the bounds (low > high, log with low <= 0, ...)
            if isinstance(exc, CrystallizeError):
                raise
            raise ValidationError(f"search space entry '{key}' = {domain!r}: {exc}") from exc
    return out


def _distribution(key: str, domain: Any, dists: ModuleType) -> BaseDistribution:
    if isinstance(domain, dists.BaseDistribution):
        return domain
    if isinstance(domain, tuple) and len(domain) in (2, 3):
        low, high = domain[0], domain[1]
        scale = domain[2] if len(domain) == 3 else None
        if not all(_is_number(v) for v in (low, high)):
            raise ValidationError(f"search space entry '{key}': range ends must be numbers, got {domain!r}")
        if isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral):  # whole numbers
            if scale is None or scale == "log":
                return dists.IntDistribution(int(low), int(high), log=scale == "log")
            if isinstance(scale, numbers.Integral) and not isinstance(scale, bool) and int(scale) > 0:
                return dists.IntDistribution(int(low), int(high), step=int(scale))
        if scale is None or scale == "log":
            return dists.FloatDistribution(float(low), float(high), log=scale == "log")
        if _is_number(scale) and scale > 0:
            return dists.FloatDistribution(float(low), float(high), step=float(scale))
        raise ValidationError(
            f"search space entry '{key}': the third item of a range is 'log' or a positive step, got {scale!r}"
        )
    if isinstance(domain, list) and domain:
        odd = [c for c in domain if not isinstance(c, _CHOICE_TYPES)]
        if odd:
            raise ValidationError(
                f"search space entry '{key}': choices must be None, bool, int, float or str (Optuna stores them), "
                f"got {type(odd[0]).__name__} {odd[0]!r:.40}; choose among names and map them in a step"
            )
        return dists.CategoricalDistribution(domain)
    raise ValidationError(
        f"search space entry '{key}' must be a (low, high[, 'log' | step]) tuple, a non-empty list of choices "
        f"or an optuna distribution, got {domain!r:.60}"
    )


def _is_number(value: Any) -> bool:
    """A finite real number (NumPy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _score(value: Any) -> float | None:
    """A told value as Optuna takes it; None (the trial failed) when it is missing, not a number or NaN."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


class OptunaOptimizer(BaseOptimizer):
    """An Optuna study driven through ``ask()``/``tell()``: ``batch_size`` trials per ask, on the driver.

    ``sampler`` is ``"tpe"`` (the default, as in Optuna), ``"cmaes"`` (numeric ranges only),
    ``"random"``, or an Optuna sampler you built (then give it its own seed). ``seed`` seeds
    the named samplers: the same seed asks the same candidates. ``study`` lets you bring your
    own (for its storage, or trials queued with ``study.enqueue_trial``); its direction must be
    the objective's. ``optimizer.study`` is the study either way (``trials_dataframe()``,
    ``optuna.visualization``).
    """

    def __init__(
        self,
        search_space: Mapping[str, Any],
        objective: Objective,
        *,
        sampler: str | BaseSampler | None = None,
        seed: int | None = None,
        batch_size: int = 1,
        study: optuna.Study | None = None,
    ) -> None:
        super().__init__(objective)
        optuna_module = _require("optuna", "OptunaOptimizer")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ParameterError(f"seed must be an int or None, got {seed!r}")
        self.batch_size = batch_size
        self.distributions = to_distributions(search_space)
        self.study: optuna.Study = self._study(optuna_module, sampler, seed, study)
        self._fail = optuna_module.trial.TrialState.FAIL
        self._pending: list[tuple[optuna.trial.Trial, Treatment]] = []
        self._scored: list[tuple[Treatment, float]] = []

    # ------------------------------------------------------------------ set-up

    def _study(
        self, module: ModuleType, sampler: str | BaseSampler | None, seed: int | None, study: optuna.Study | None
    ) -> optuna.Study:
        if study is not None:
            if sampler is not None or seed is not None:
                raise ParameterError(
                    "OptunaOptimizer(study=...) uses the study's sampler; leave sampler and seed unset"
                )
            if not isinstance(study, module.Study):
                raise ParameterError(f"study must be an optuna.Study, got {type(study).__name__}")
            if len(study.directions) != 1:
                raise ValidationError("the study is multi-objective; OptunaOptimizer optimises one Objective")
            direction = study.direction.name.lower()
            if direction != self.objective.direction:
                raise ValidationError(
                    f"the study's direction is '{direction}' but the objective's is '{self.objective.direction}'"
                )
            return study
        return module.create_study(sampler=self._sampler(module, sampler, seed), direction=self.objective.direction)

    def _sampler(self, module: ModuleType, sampler: str | BaseSampler | None, seed: int | None) -> BaseSampler:
        if isinstance(sampler, module.samplers.BaseSampler):
            if seed is not None:
                raise ParameterError("seed= seeds the named samplers; give your own sampler its seed when you build it")
            if isinstance(sampler, module.samplers.CmaEsSampler):
                _require("cmaes", "CmaEsSampler")
            return sampler
        name = "tpe" if sampler is None else sampler
        if name not in SAMPLER_NAMES:
            raise ValidationError(
                f"sampler must be one of {', '.join(repr(n) for n in SAMPLER_NAMES)} or an optuna sampler, "
                f"got {sampler!r}"
            )
        if seed is None:
            logger.warning(
                "OptunaOptimizer(sampler=%r) without a seed: every run searches other candidates; pass seed=... "
                "to repeat the search",
                name,
            )
        if name == "random":
            return module.samplers.RandomSampler(seed=seed)
        if name == "tpe":
            return module.samplers.TPESampler(seed=seed)
        _require("cmaes", "OptunaOptimizer(sampler='cmaes')")
        choices = sorted(
            k for k, d in self.distributions.items() if isinstance(d, module.distributions.CategoricalDistribution)
        )
        if choices:
            # CMA-ES would draw these at random, with a warning per trial: say it now instead.
            raise ValidationError(
                f"sampler='cmaes' searches numeric ranges only, but {choices} are lists of choices; "
                "use sampler='tpe', or pass optuna.samplers.CmaEsSampler(independent_sampler=...) yourself"
            )
        return module.samplers.CmaEsSampler(seed=seed)

    # ------------------------------------------------------------------ ask / tell

    def ask(self) -> list[Treatment]:
        """``batch_size`` new trials of the study, as treatments named ``optuna_<trial number>``."""
        if self._pending:
            logger.warning("ask() before tell(): the %d trial(s) of the last ask are marked failed", len(self._pending))
            self._fail_pending()
        for _ in range(self.batch_size):
            trial = self.study.ask(fixed_distributions=self.distributions)
            params = {key: trial.params[key] for key in self.distributions}
            self._pending.append((trial, Treatment(f"{NAME_PREFIX}_{trial.number}", params)))
        return [treatment for _, treatment in self._pending]

    def tell(self, objective_values: dict[str, float]) -> None:
        """Tell the study each asked trial's mean objective; a missing or NaN value fails that trial."""
        if not self._pending:
            raise OptimizerError("tell() called without a preceding ask()")
        if len(self._pending) == 1 and self.objective.metric in objective_values:
            scores = {self._pending[0][1].name: objective_values[self.objective.metric]}
        else:
            scores = dict(objective_values)
        for trial, treatment in self._pending:
            value = _score(scores.get(treatment.name))
            if value is None:
                self.study.tell(trial, state=self._fail)
            else:
                self.study.tell(trial, value)
                self._scored.append((treatment, value))
        self._pending = []

    def _fail_pending(self) -> None:
        for trial, _ in self._pending:
            self.study.tell(trial, state=self._fail)
        self._pending = []

    def get_best_treatment(self) -> Treatment:
        """The best scored candidate this optimizer asked (the first one on a tie)."""
        if not self._scored:
            raise OptimizerError("no candidate has been scored yet; run optimize() first (or every trial failed)")
        best, best_score = self._scored[0]
        for treatment, score in self._scored[1:]:
            if self.objective.better(score, best_score):
                best, best_score = treatment, score
        return best

    def __repr__(self) -> str:
        return (
            f"OptunaOptimizer({sorted(self.distributions)}, {self.objective!r}, "
            f"sampler={type(self.study.sampler).__name__}, batch_size={self.batch_size})"
        )
