"""The built-in verifiers: ``Hypothesis(verifier=welch_t_test(alpha=0.01), metrics="score")``.

Each compares the one metric of its group between the baseline and a treatment with a test of
``crystallize.stats.tests`` and returns that test's dict plus ``metric``. The fold passes samples
in replicate order, only for replicates where both sides finished, so the paired tests pair
replicate i of the baseline with replicate i of the treatment (they share a seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..decorators import verifier
from ..errors import ValidationError
from . import tests

__all__ = [
    "BUILTIN_VERIFIERS",
    "bootstrap_ci",
    "mann_whitney_test",
    "paired_t_test",
    "permutation_test",
    "welch_t_test",
    "wilcoxon_test",
]


def _compare(
    name: str,
    test: Callable[..., dict],
    baseline: Mapping[str, Sequence[Any]],
    treatment: Mapping[str, Sequence[Any]],
    params: dict[str, Any],
) -> dict:
    """Run ``test`` on the group's single metric; errors name the verifier and the metric."""
    metrics = list(baseline)
    if len(metrics) != 1:
        listed = ", ".join(repr(m) for m in metrics) or "none"
        groups = ", ".join(f"[{m!r}]" for m in metrics) or "['score']"
        raise ValidationError(
            f"{name} compares one metric at a time, but this group has {len(metrics)} ({listed}); "
            f"pass metrics=[{groups}] (one group per metric) to test each of them"
        )
    metric = metrics[0]
    try:
        result = test(baseline[metric], treatment[metric], **params)
    except ValidationError as exc:
        raise ValidationError(f"{name} on metric '{metric}': {exc}") from None
    return {"test": result.pop("test"), "metric": metric, **result}


def _welch_t_test(baseline: Any, treatment: Any, *, alpha: float = 0.05, confidence: float = 0.95) -> dict:
    """Welch's t-test of the mean (independent samples, unequal variances)."""
    return _compare("welch_t_test", tests.welch_t, baseline, treatment, {"alpha": alpha, "confidence": confidence})


def _paired_t_test(baseline: Any, treatment: Any, *, alpha: float = 0.05, confidence: float = 0.95) -> dict:
    """Paired t-test on replicate pairs (common random numbers)."""
    return _compare("paired_t_test", tests.paired_t, baseline, treatment, {"alpha": alpha, "confidence": confidence})


def _mann_whitney_test(
    baseline: Any,
    treatment: Any,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Mann-Whitney U (independent samples, ranks) with the rank-biserial correlation."""
    params = {"alpha": alpha, "confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    return _compare("mann_whitney_test", tests.mann_whitney, baseline, treatment, params)


def _wilcoxon_test(
    baseline: Any,
    treatment: Any,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Wilcoxon signed-rank test on replicate pairs with the matched-pairs rank-biserial correlation."""
    params = {"alpha": alpha, "confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    return _compare("wilcoxon_test", tests.wilcoxon, baseline, treatment, params)


def _permutation_test(
    baseline: Any,
    treatment: Any,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    paired: bool = False,
) -> dict:
    """Permutation test of the mean difference (``paired=True``: sign flips of replicate pairs)."""
    params = {"alpha": alpha, "confidence": confidence, "n_resamples": n_resamples, "seed": seed, "paired": paired}
    return _compare("permutation_test", tests.permutation, baseline, treatment, params)


def _bootstrap_ci(
    baseline: Any,
    treatment: Any,
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    paired: bool = False,
) -> dict:
    """Bootstrap interval of the mean difference; ``significant`` when it excludes 0."""
    params = {"alpha": alpha, "confidence": confidence, "n_resamples": n_resamples, "seed": seed, "paired": paired}
    return _compare("bootstrap_ci", tests.bootstrap_ci, baseline, treatment, params)


def _public(fn: Callable[..., dict], name: str) -> Any:
    """The @verifier factory of ``fn`` under its public name.

    The function keeps its private ``__qualname__`` so pickle finds it by reference (the public
    module attribute is the factory, not the function); ``__name__`` is the public one, for reprs.
    """
    fn.__name__ = name
    factory = verifier(fn)
    factory.__name__ = factory.__qualname__ = name
    return factory


welch_t_test = _public(_welch_t_test, "welch_t_test")
paired_t_test = _public(_paired_t_test, "paired_t_test")
mann_whitney_test = _public(_mann_whitney_test, "mann_whitney_test")
wilcoxon_test = _public(_wilcoxon_test, "wilcoxon_test")
permutation_test = _public(_permutation_test, "permutation_test")
bootstrap_ci = _public(_bootstrap_ci, "bootstrap_ci")

# The names a config.yaml may use without defining them (a folder's own definition wins).
BUILTIN_VERIFIERS: dict[str, Any] = {
    "welch_t_test": welch_t_test,
    "paired_t_test": paired_t_test,
    "mann_whitney_test": mann_whitney_test,
    "wilcoxon_test": wilcoxon_test,
    "permutation_test": permutation_test,
    "bootstrap_ci": bootstrap_ci,
}
