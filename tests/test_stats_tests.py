"""The built-in two-sample tests agree with scipy.stats on fixed data, and degenerate input says so.

Every statistic, p-value and interval is recomputed here with scipy directly (same data,
same seed), so a wrapper that swapped the sides, the interval or the seed would fail.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from crystallize.errors import ValidationError
from crystallize.stats import tests as st
from crystallize.stats.tests import _batch, bootstrap_ci, mann_whitney, paired_t, permutation, welch_t, wilcoxon

# Fixed, skewed-ish data (no ties), 12 values per side; the treatment is shifted up.
BASE = [4.1, 5.3, 3.8, 6.0, 4.9, 5.5, 4.4, 7.2, 5.1, 4.0, 5.8, 4.6]
TREAT = [5.0, 6.1, 4.2, 7.4, 5.9, 6.8, 4.7, 9.9, 6.2, 5.1, 6.3, 5.7]
B, T = np.asarray(BASE), np.asarray(TREAT)

CONTRACT_KEYS = {
    "test", "p_value", "significant", "alpha", "confidence", "statistic", "n_baseline", "n_treatment",
    "effect", "effect_size", "difference", "ci_low", "ci_high",
}  # fmt: skip
ALL_TESTS = [welch_t, paired_t, mann_whitney, wilcoxon, permutation, bootstrap_ci]


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def test_welch_t_matches_scipy() -> None:
    out = welch_t(BASE, TREAT, alpha=0.05, confidence=0.9)
    ref = stats.ttest_ind(T, B, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert out["test"] == "welch_t" and out["effect"] == "hedges_g"
    assert _close(out["p_value"], ref.pvalue) and _close(out["statistic"], ref.statistic)
    assert _close(out["ci_low"], ci.low) and _close(out["ci_high"], ci.high)
    assert _close(out["difference"], T.mean() - B.mean()) and out["mean_difference"] == out["difference"]
    assert out["hedges_g"] == out["effect_size"] > 0
    assert out["significant"] is bool(ref.pvalue < 0.05) is False  # p = 0.056: Welch misses what the pairing sees
    assert (out["n_baseline"], out["n_treatment"], out["confidence"]) == (12, 12, 0.9)


def test_paired_t_matches_scipy() -> None:
    out = paired_t(BASE, TREAT)
    ref = stats.ttest_rel(T, B)
    ci = ref.confidence_interval(confidence_level=0.95)
    assert _close(out["p_value"], ref.pvalue) and _close(out["statistic"], ref.statistic)
    assert _close(out["ci_low"], ci.low) and _close(out["ci_high"], ci.high)
    assert _close(out["difference"], float(np.mean(T - B)))
    assert out["significant"] is True  # every pair but none goes up: the pairing sees it


def test_mann_whitney_matches_scipy_and_its_interval_is_the_seeded_bootstrap() -> None:
    out = mann_whitney(BASE, TREAT, n_resamples=500, seed=7)
    ref = stats.mannwhitneyu(T, B, alternative="two-sided")
    assert _close(out["p_value"], ref.pvalue) and out["statistic"] == ref.statistic  # the treatment's U
    assert _close(out["rank_biserial"], 2 * ref.statistic / (12 * 12) - 1)
    assert out["effect"] == "rank_biserial" and out["effect_size"] == out["rank_biserial"]
    assert _close(out["difference"], np.median(T) - np.median(B)) and out["median_difference"] == out["difference"]
    boot = stats.bootstrap(
        (B, T), lambda b, t, axis=-1: np.median(t, axis=axis) - np.median(b, axis=axis), n_resamples=500,
        method="percentile", rng=np.random.default_rng(7), batch=_batch(24),
    )  # fmt: skip
    assert (out["ci_low"], out["ci_high"]) == (boot.confidence_interval.low, boot.confidence_interval.high)


def test_wilcoxon_matches_scipy() -> None:
    out = wilcoxon(BASE, TREAT, n_resamples=500, seed=3)
    ref = stats.wilcoxon(T, B)
    assert _close(out["p_value"], ref.pvalue) and out["statistic"] == ref.statistic
    assert _close(out["difference"], float(np.median(T - B)))
    boot = stats.bootstrap(
        (T - B,), lambda d, axis=-1: np.median(d, axis=axis), n_resamples=500, method="percentile",
        rng=np.random.default_rng(3), batch=_batch(12),
    )  # fmt: skip
    assert (out["ci_low"], out["ci_high"]) == (boot.confidence_interval.low, boot.confidence_interval.high)
    assert out["rank_biserial"] == 1.0  # every difference is positive


@pytest.mark.parametrize("paired", [False, True])
def test_permutation_matches_scipy(paired: bool) -> None:
    out = permutation(BASE, TREAT, n_resamples=999, seed=5, paired=paired)

    def mean_diff(b, t, axis=-1):
        return np.mean(t, axis=axis) - np.mean(b, axis=axis)

    ref = stats.permutation_test(
        (B, T), mean_diff, permutation_type="samples" if paired else "independent", vectorized=True,
        n_resamples=999, rng=np.random.default_rng(5), batch=_batch(24),
    )  # fmt: skip
    assert _close(out["p_value"], ref.pvalue) and _close(out["statistic"], ref.statistic)
    assert out["effect"] == "hedges_g" and not math.isnan(out["hedges_g"])
    assert out["ci_low"] < out["difference"] < out["ci_high"]


@pytest.mark.parametrize("paired", [False, True])
def test_bootstrap_ci_is_scipys_bca_interval(paired: bool) -> None:
    out = bootstrap_ci(BASE, TREAT, n_resamples=999, seed=11, paired=paired, confidence=0.9)
    if paired:
        data, stat = (T - B,), (lambda d, axis=-1: np.mean(d, axis=axis))
    else:
        data, stat = (B, T), (lambda b, t, axis=-1: np.mean(t, axis=axis) - np.mean(b, axis=axis))
    ref = stats.bootstrap(
        data, stat, n_resamples=999, confidence_level=0.9, method="BCa", rng=np.random.default_rng(11),
        batch=_batch(sum(len(x) for x in data)),
    )  # fmt: skip
    assert (out["ci_low"], out["ci_high"]) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert math.isnan(out["p_value"]) and math.isnan(out["statistic"])
    assert out["effect"] == "mean_difference" and out["effect_size"] == out["difference"]
    assert out["significant"] is (out["ci_low"] > 0 or out["ci_high"] < 0)


def test_rank_tests_resist_an_outlier_that_sinks_the_t_test() -> None:
    base = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01]
    treat = [1.3, 1.4, 1.35, 1.25, 1.32, 1.38, 1.29, 60.0]  # one wild replicate
    assert welch_t(base, treat)["significant"] is False
    assert mann_whitney(base, treat)["significant"] is True


@pytest.mark.parametrize("test", ALL_TESTS)
def test_results_have_the_contract_keys_and_are_plain_json(test) -> None:
    out = test(BASE, TREAT, **({"n_resamples": 200} if test not in (welch_t, paired_t) else {}))
    assert CONTRACT_KEYS <= set(out) and "note" not in out and "metric" not in out
    assert out["test"] == test.__name__
    assert all(type(v) in (str, int, float, bool) for v in out.values()), out
    json.loads(json.dumps(out))


def test_the_seeded_intervals_do_not_depend_on_the_global_random_state() -> None:
    np.random.seed(1)
    first = mann_whitney(BASE, TREAT, n_resamples=300)
    np.random.seed(2)
    np.random.random(100)
    again = mann_whitney(BASE, TREAT, n_resamples=300)
    other = mann_whitney(BASE, TREAT, n_resamples=300, seed=1)
    assert first == again
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])


NAN = float("nan")
DEGENERATE = [
    pytest.param([1.0], [1.0], "too few samples", id="one-each"),
    pytest.param([], [], "too few samples", id="empty"),
    pytest.param([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], "constant data", id="all-equal"),
    pytest.param([1.0, NAN, 3.0], [1.0, 2.0, 3.0], "non-finite values", id="nan"),
    pytest.param([1.0, 2.0, 3.0], [1.0, float("inf"), 3.0], "non-finite values", id="inf"),
]


@pytest.mark.parametrize("test", ALL_TESTS)
@pytest.mark.parametrize(("base", "treat", "why"), DEGENERATE)
def test_degenerate_input_is_a_note_not_a_warning(test, base, treat, why) -> None:
    out = test(base, treat)
    assert out["note"].startswith(why), out["note"]
    assert math.isnan(out["p_value"]) and out["significant"] is False
    assert math.isnan(out["ci_low"]) and math.isnan(out["ci_high"])
    assert CONTRACT_KEYS <= set(out)
    json.loads(json.dumps(out))  # NaN is allowed (Python's json writes it)


def test_a_difference_without_spread_is_certain_not_undefined() -> None:
    """Constant sides that differ, or paired differences that are all one value (what common random
    numbers make of a treatment that shifts a metric), are scipy's limit: t infinite, p 0, CI a point."""
    noise = np.random.default_rng(3).normal(size=12)
    cases = [
        (welch_t, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], {}),
        (paired_t, list(noise), list(noise + 0.25), {}),  # 0.25 up to rounding, as (noise + delta) - noise is
        (bootstrap_ci, list(noise), list(noise + 0.25), {"paired": True, "n_resamples": 200}),
        (bootstrap_ci, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], {"n_resamples": 200}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = [test(b, t, **kw) for test, b, t, kw in cases]
    for out in results:
        assert out["note"].startswith("deterministic difference"), out
        assert out["significant"] is True
        assert out["ci_low"] == pytest.approx(out["difference"]) == pytest.approx(out["ci_high"])
    assert results[0]["difference"] == 1.0 and results[1]["difference"] == pytest.approx(0.25)
    assert results[0]["p_value"] == results[1]["p_value"] == 0.0
    assert results[0]["statistic"] == results[1]["statistic"] == math.inf
    assert math.isnan(results[2]["p_value"])  # bootstrap_ci is an interval, not a test
    # scipy on exactly constant differences says the same (with a precision warning we keep from users).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = stats.ttest_rel([3.0, 4.0, 6.0], [1.0, 2.0, 4.0])
    assert exact.statistic == math.inf and exact.pvalue == 0.0
    assert paired_t([1.0, 2.0, 4.0], [3.0, 4.0, 6.0])["p_value"] == 0.0


def test_all_zero_paired_differences_are_a_note() -> None:
    same = [1.0, 5.0, 3.0, 2.0]
    for out in (paired_t(same, same), wilcoxon(same, same), permutation(same, same, paired=True)):
        assert out["note"].startswith("constant data"), out
        assert math.isnan(out["p_value"]) and out["significant"] is False


def test_one_constant_side_is_still_tested() -> None:
    out = welch_t([1.0, 1.0, 1.0, 1.0], [1.5, 2.5, 2.0, 3.0])
    assert "note" not in out and 0 < out["p_value"] < 0.05


@pytest.mark.parametrize("test", [paired_t, wilcoxon])
def test_paired_tests_refuse_unequal_lengths(test) -> None:
    with pytest.raises(ValidationError, match="baseline has 3 values and the treatment 4"):
        test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


def test_values_that_are_not_numbers_are_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="treatment samples must be numbers"):
        welch_t([1.0, 2.0], ["a", "b"])
    with pytest.raises(ValidationError, match="one number per replicate"):
        welch_t([1.0, 2.0], [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValidationError, match="alpha"):
        welch_t(BASE, TREAT, alpha=5)


def test_module_exports_the_contract_names() -> None:
    names = {"welch_t", "paired_t", "mann_whitney", "wilcoxon", "permutation", "bootstrap_ci"}
    assert names <= set(dir(st))


def test_resampled_numbers_are_pinned() -> None:
    # Seeded resampling must give these numbers on every machine (PCG64 and scipy's resampling are
    # platform-independent); a change here means a scipy/numpy upgrade or our code changed answers.
    mw = mann_whitney(BASE, TREAT, n_resamples=500, seed=7)
    assert (mw["ci_low"], mw["ci_high"]) == pytest.approx((-0.3, 1.95), abs=1e-12)
    boot = bootstrap_ci(BASE, TREAT, n_resamples=999, seed=11)
    assert (boot["ci_low"], boot["ci_high"]) == pytest.approx((0.216015230308797, 2.17735817471633), rel=1e-9)
    assert permutation(BASE, TREAT, n_resamples=999, seed=5)["p_value"] == pytest.approx(0.054, abs=1e-12)
