"""Two-sample tests as pure functions returning plain, JSON-friendly dicts.

Each takes ``(baseline, treatment)`` sequences of numbers; the difference reported is always
treatment minus baseline. scipy.stats computes every test and interval; this module only
checks the inputs, so that too few samples, constant data or NaNs give a result with a
``note`` (p-value NaN, not significant) instead of a scipy warning or a meaningless number.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ValidationError
from .effect_sizes import hedges_g, hedges_g_paired, rank_biserial, rank_biserial_paired

logger = logging.getLogger(__name__)

# Bootstrap/permutation resamples are drawn in batches of about this many numbers, so memory stays
# bounded for large samples. scipy draws per batch, so the batch size changes the numbers: it depends on
# the data size only (never on the machine), and changing this constant changes every interval.
_BATCH_NUMBERS = 2_000_000


def welch_t(
    baseline: Sequence[Any], treatment: Sequence[Any], *, alpha: float = 0.05, confidence: float = 0.95
) -> dict:
    """Welch's t-test (unequal variances): the default for two independent samples of roughly normal means."""
    b, t = _samples(baseline, treatment, alpha, confidence)
    note = _independent_note(b, t, "welch_t")
    if note is None and _flat(b, b) and _flat(t, t):
        shift = _deterministic("welch_t", b, t, alpha, confidence, _mean_diff(b, t), hedges_g(b, t))
        if shift is not None:
            return shift
        note = _constant_both(b, t)
    if note:
        return _degenerate("welch_t", "hedges_g", b, t, alpha, confidence, note, _mean_diff(b, t))
    res = _quiet(lambda: _scipy().ttest_ind(t, b, equal_var=False))
    ci = res.confidence_interval(confidence_level=confidence)
    g = hedges_g(b, t)
    diff = _mean_diff(b, t)
    return _result(
        "welch_t", res.pvalue, res.statistic, alpha, confidence, len(b), len(t), "hedges_g", g, diff,
        (ci.low, ci.high), hedges_g=g, mean_difference=diff,
    )  # fmt: skip


def paired_t(
    baseline: Sequence[Any], treatment: Sequence[Any], *, alpha: float = 0.05, confidence: float = 0.95
) -> dict:
    """Paired t-test on replicate pairs: with common random numbers it removes the noise both sides share."""
    b, t = _samples(baseline, treatment, alpha, confidence)
    note = _paired_note(b, t, "paired_t")
    d = t - b
    if note is None and _flat(d, b, t):
        shift = _deterministic("paired_t", b, t, alpha, confidence, _mean(d), hedges_g_paired(b, t))
        if shift is not None:
            return shift
        note = "constant data: every paired difference is 0, so there is nothing to test"
    if note:
        return _degenerate("paired_t", "hedges_g", b, t, alpha, confidence, note, _mean(d), paired=True)
    res = _quiet(lambda: _scipy().ttest_rel(t, b))
    ci = res.confidence_interval(confidence_level=confidence)
    g = hedges_g_paired(b, t)
    diff = _mean(d)
    return _result(
        "paired_t", res.pvalue, res.statistic, alpha, confidence, len(b), len(t), "hedges_g", g, diff,
        (ci.low, ci.high), hedges_g=g, mean_difference=diff,
    )  # fmt: skip


def mann_whitney(
    baseline: Sequence[Any],
    treatment: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Mann-Whitney U (independent samples, ranks): for skewed data or outliers.

    ``statistic`` is the treatment's U; ``difference`` is median(treatment) - median(baseline)
    with a percentile-bootstrap interval (fixed ``seed``).
    """
    b, t = _samples(baseline, treatment, alpha, confidence)
    note = _independent_note(b, t, "mann_whitney") or _constant_pooled(b, t)
    if note:
        return _degenerate("mann_whitney", "rank_biserial", b, t, alpha, confidence, note, _median_diff(b, t))
    res = _quiet(lambda: _scipy().mannwhitneyu(t, b, alternative="two-sided", method="auto"))
    r = rank_biserial(b, t)
    diff = _median_diff(b, t)
    ci = _bootstrap((b, t), _median_difference, confidence, n_resamples, seed, paired=False, method="percentile")
    return _result(
        "mann_whitney", res.pvalue, res.statistic, alpha, confidence, len(b), len(t), "rank_biserial", r, diff,
        ci, rank_biserial=r, median_difference=diff,
    )  # fmt: skip


def wilcoxon(
    baseline: Sequence[Any],
    treatment: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Wilcoxon signed-rank test on replicate pairs: the paired test for skewed data or outliers.

    Zero differences are dropped (``zero_method="wilcox"``); ``statistic`` is scipy's
    min(W+, W-); ``difference`` is the median of the paired differences, with a
    percentile-bootstrap interval over pairs (fixed ``seed``).
    """
    b, t = _samples(baseline, treatment, alpha, confidence)
    note = _paired_note(b, t, "wilcoxon")
    d = t - b
    if note is None and not np.any(d != 0):
        note = "constant data: every paired difference is 0, so there is nothing to rank"
    if note:
        return _degenerate("wilcoxon", "rank_biserial", b, t, alpha, confidence, note, _median(d), paired=True)
    res = _quiet(lambda: _scipy().wilcoxon(t, b, zero_method="wilcox", alternative="two-sided", method="auto"))
    r = rank_biserial_paired(b, t)
    diff = _median(d)
    ci = _bootstrap((d,), _median_of, confidence, n_resamples, seed, paired=False, method="percentile")
    return _result(
        "wilcoxon", res.pvalue, res.statistic, alpha, confidence, len(b), len(t), "rank_biserial", r, diff,
        ci, rank_biserial=r, median_difference=diff,
    )  # fmt: skip


def permutation(
    baseline: Sequence[Any],
    treatment: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    paired: bool = False,
) -> dict:
    """Permutation test of the mean difference: no distributional assumption, exact when few arrangements exist.

    ``paired=True`` flips the sign of replicate pairs instead of shuffling labels. The interval
    is a bootstrap interval of the mean difference (BCa, fixed ``seed``).
    """
    b, t = _samples(baseline, treatment, alpha, confidence)
    if paired:
        note = _paired_note(b, t, "permutation")
        if note is None and not np.any(t != b):
            note = "constant data: every paired difference is 0, so every permutation gives the same statistic"
    else:
        note = _independent_note(b, t, "permutation") or _constant_pooled(b, t)
    diff = _mean(t - b) if paired and note is None else _mean_diff(b, t)
    if note:
        return _degenerate("permutation", "hedges_g", b, t, alpha, confidence, note, diff, paired=paired)
    rng = np.random.default_rng(seed)
    kind = "samples" if paired else "independent"
    res = _quiet(
        lambda: _scipy().permutation_test(
            (b, t), _mean_difference, permutation_type=kind, vectorized=True, n_resamples=n_resamples,
            alternative="two-sided", rng=rng, batch=_batch(len(b) + len(t)),
        )
    )  # fmt: skip
    g = hedges_g_paired(b, t) if paired else hedges_g(b, t)
    ci = _mean_ci(b, t, confidence, n_resamples, seed, paired)
    return _result(
        "permutation", res.pvalue, res.statistic, alpha, confidence, len(b), len(t), "hedges_g", g, diff,
        ci, hedges_g=g, mean_difference=diff,
    )  # fmt: skip


def bootstrap_ci(
    baseline: Sequence[Any],
    treatment: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    paired: bool = False,
) -> dict:
    """Bootstrap interval of the mean difference (BCa, fixed ``seed``): an interval, not a test.

    ``p_value`` and ``statistic`` are NaN; ``significant`` means the interval excludes 0.
    ``paired=True`` resamples replicate pairs together.
    """
    b, t = _samples(baseline, treatment, alpha, confidence)
    if paired:
        note = _paired_note(b, t, "bootstrap_ci")
        flat = note is None and _flat(t - b, b, t)
    else:
        note = _independent_note(b, t, "bootstrap_ci")
        flat = note is None and _flat(b, b) and _flat(t, t)
    diff = _mean(t - b) if paired and note is None else _mean_diff(b, t)
    if flat:  # every resample gives the same difference: the interval is that one point
        shift = _deterministic("bootstrap_ci", b, t, alpha, confidence, diff, diff, effect="mean_difference")
        if shift is not None:
            shift["p_value"] = shift["statistic"] = math.nan  # an interval, not a test
            return shift
        note = "constant data: the difference is 0 in every resample, so the interval has no width"
    if note:
        return _degenerate("bootstrap_ci", "mean_difference", b, t, alpha, confidence, note, diff, paired=paired)
    low, high = _mean_ci(b, t, confidence, n_resamples, seed, paired)
    result = _result(
        "bootstrap_ci", math.nan, math.nan, alpha, confidence, len(b), len(t), "mean_difference", diff, diff,
        (low, high), mean_difference=diff,
    )  # fmt: skip
    result["significant"] = bool(low > 0 or high < 0)
    return result


# --- input checks ---------------------------------------------------------------------------------


def _samples(baseline: Sequence[Any], treatment: Sequence[Any], alpha: float, confidence: float) -> tuple:
    if not 0.0 < float(alpha) < 1.0:
        raise ValidationError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValidationError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return _numbers(baseline, "baseline"), _numbers(treatment, "treatment")


def _numbers(values: Sequence[Any], side: str) -> np.ndarray:
    """A 1-D float array; a ValidationError when the values are not numbers (a string, a list per replicate...)."""
    if isinstance(values, (str, bytes)):
        raise ValidationError(f"the {side} samples must be a sequence of numbers, got a string")
    try:
        array = np.asarray(list(values), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the {side} samples must be numbers: {exc}") from None
    if array.ndim != 1:
        raise ValidationError(f"the {side} samples must be one number per replicate, got shape {array.shape}")
    return array


def _finite_note(b: np.ndarray, t: np.ndarray) -> str | None:
    counts = {side: int(np.sum(~np.isfinite(x))) for side, x in (("baseline", b), ("treatment", t))}
    bad = [f"{side} has {count}" for side, count in counts.items() if count]
    if bad:
        return f"non-finite values: {' and '.join(bad)} NaN or infinite value(s); no test is computed on them"
    return None


def _independent_note(b: np.ndarray, t: np.ndarray, test: str) -> str | None:
    if len(b) < 2 or len(t) < 2:
        return f"too few samples: baseline has {len(b)}, treatment has {len(t)}; {test} needs at least 2 per side"
    return _finite_note(b, t)


def _paired_note(b: np.ndarray, t: np.ndarray, test: str) -> str | None:
    if len(b) != len(t):
        raise ValidationError(
            f"{test} pairs replicates, but the baseline has {len(b)} values and the treatment {len(t)}: "
            "record the metric exactly once per replicate, or use an independent-samples test"
        )
    if len(b) < 2:
        return f"too few samples: {len(b)} replicate pair(s); {test} needs at least 2"
    return _finite_note(b, t)


def _constant_both(b: np.ndarray, t: np.ndarray) -> str | None:
    if _flat(b, b) and _flat(t, t):
        return (
            f"constant data: baseline is always {float(b[0]):g} and treatment always {float(t[0]):g}; "
            "with no spread the test is undefined (add noise or more variation)"
        )
    return None


def _flat(x: np.ndarray, *scale: np.ndarray) -> bool:
    """Constant up to floating-point rounding of values as large as ``scale``'s.

    With common random numbers, ``(noise + delta) - noise`` differs from ``delta`` only by
    rounding; a t statistic on such differences is a rounding artefact (scipy warns of
    catastrophic cancellation), so it counts as constant.
    """
    magnitude = max(float(np.max(np.abs(s))) for s in scale)
    return bool(np.ptp(x) <= 16 * np.finfo(float).eps * magnitude)


def _deterministic(
    test: str,
    b: np.ndarray,
    t: np.ndarray,
    alpha: float,
    confidence: float,
    difference: float,
    effect_size: float,
    *,
    effect: str = "hedges_g",
) -> dict | None:
    """The result for a difference without spread (None when it is 0): every paired difference, or
    each whole side, is one value, as common random numbers make of a treatment that shifts a metric.

    scipy gives such exact data t = inf and p = 0 (with a precision warning, and rounding noise
    turns it into a meaningless p like 1e-170): the shift is certain for these replicates, so the
    result is that limit, stated as such in ``note``, not a "not significant" NaN.
    """
    if not math.isfinite(difference) or difference == 0:
        return None
    extra = {"hedges_g": effect_size, "mean_difference": difference} if effect == "hedges_g" else {}
    result = _result(
        test, 0.0, math.copysign(math.inf, difference), alpha, confidence, len(b), len(t), effect, effect_size,
        difference, (difference, difference), **extra,
    )  # fmt: skip
    result["significant"] = True
    result["note"] = f"deterministic difference: exactly {difference:g}, no spread to test against (t = inf, p = 0)"
    return result


def _constant_pooled(b: np.ndarray, t: np.ndarray) -> str | None:
    if np.all(b == b[0]) and np.all(t == b[0]):
        return f"constant data: every value on both sides is {float(b[0]):g}, so there is nothing to compare"
    return None


# --- results --------------------------------------------------------------------------------------


def _result(
    test: str,
    p_value: Any,
    statistic: Any,
    alpha: float,
    confidence: float,
    n_baseline: int,
    n_treatment: int,
    effect: str,
    effect_size: float,
    difference: float,
    ci: tuple[Any, Any],
    **extra: float,
) -> dict:
    p = float(p_value)
    return {
        "test": test,
        "p_value": p,
        "significant": bool(p < alpha),
        "alpha": float(alpha),
        "confidence": float(confidence),
        "statistic": float(statistic),
        "n_baseline": int(n_baseline),
        "n_treatment": int(n_treatment),
        "effect": effect,
        "effect_size": float(effect_size),
        "difference": float(difference),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        **{key: float(value) for key, value in extra.items()},
    }


_EXTRA_KEYS = {
    "hedges_g": ("hedges_g", "mean_difference"),
    "rank_biserial": ("rank_biserial", "median_difference"),
    "mean_difference": ("mean_difference",),
}


def _degenerate(
    test: str,
    effect: str,
    b: np.ndarray,
    t: np.ndarray,
    alpha: float,
    confidence: float,
    note: str,
    difference: float,
    *,
    paired: bool = False,
) -> dict:
    """The same keys as a computed result, NaN where nothing can be computed, and the reason in ``note``."""
    extra = {key: (difference if key.endswith("difference") else math.nan) for key in _EXTRA_KEYS[effect]}
    result = _result(
        test, math.nan, math.nan, alpha, confidence, len(b), len(t), effect, math.nan, difference,
        (math.nan, math.nan), **extra,
    )  # fmt: skip
    if effect == "mean_difference":
        result["effect_size"] = float(difference)
    result["significant"] = False
    result["note"] = note
    return result


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) and np.all(np.isfinite(x)) else math.nan


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) and np.all(np.isfinite(x)) else math.nan


def _mean_diff(b: np.ndarray, t: np.ndarray) -> float:
    return _mean(t) - _mean(b)


def _median_diff(b: np.ndarray, t: np.ndarray) -> float:
    return _median(t) - _median(b)


def _mean_difference(b: np.ndarray, t: np.ndarray, axis: int = -1) -> Any:
    return np.mean(t, axis=axis) - np.mean(b, axis=axis)


def _median_difference(b: np.ndarray, t: np.ndarray, axis: int = -1) -> Any:
    return np.median(t, axis=axis) - np.median(b, axis=axis)


def _mean_of(d: np.ndarray, axis: int = -1) -> Any:
    return np.mean(d, axis=axis)


def _median_of(d: np.ndarray, axis: int = -1) -> Any:
    return np.median(d, axis=axis)


def _batch(n_values: int) -> int:
    return max(1, _BATCH_NUMBERS // max(1, n_values))


def _mean_ci(
    b: np.ndarray, t: np.ndarray, confidence: float, n_resamples: int, seed: int, paired: bool
) -> tuple[float, float]:
    if paired:
        return _bootstrap((t - b,), _mean_of, confidence, n_resamples, seed, paired=False, method="BCa")
    return _bootstrap((b, t), _mean_difference, confidence, n_resamples, seed, paired=False, method="BCa")


def _bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    confidence: float,
    n_resamples: int,
    seed: int,
    *,
    paired: bool,
    method: str,
) -> tuple[float, float]:
    """scipy's bootstrap interval with a fixed seed; BCa falls back to percentile where BCa is undefined."""

    def run(how: str) -> tuple[float, float, bool]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = _scipy().bootstrap(
                data, statistic, n_resamples=n_resamples, vectorized=True, paired=paired,
                confidence_level=confidence, method=how, rng=np.random.default_rng(seed),
                batch=_batch(sum(len(x) for x in data)),
            )  # fmt: skip
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return low, high, bool(caught) or not (math.isfinite(low) and math.isfinite(high))

    low, high, troubled = run(method)
    if troubled and method != "percentile":
        low, high, troubled = run("percentile")
    if troubled:
        return math.nan, math.nan
    return low, high


def _quiet(call: Callable[[], Any]) -> Any:
    """Run a scipy call with its warnings kept from the user: the inputs were checked, so what is left
    is advice (such as "exact p-value unavailable with ties"), logged instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    for warning in caught:
        logger.info("scipy: %s", warning.message)
    return result


def _scipy() -> Any:
    """scipy.stats, imported on first use: it costs more to import than the rest of crystallize."""
    from scipy import stats

    return stats
