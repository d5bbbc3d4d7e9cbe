"""Holm and Benjamini-Hochberg adjustment: published examples, brute-force definitions, and the result merge."""

from __future__ import annotations

import math
import random

import pytest

from crystallize import Hypothesis, hypothesis
from crystallize.errors import ValidationError
from crystallize.stats.adjust import adjust_p_values, adjust_results


def holm_rejects(ps: list[float], alpha: float) -> set[int]:
    """Holm (1979) step-down by its definition: reject in order while p_(k) <= alpha / (m - k)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    rejected: set[int] = set()
    for k, i in enumerate(order):
        if ps[i] > alpha / (len(ps) - k):
            break
        rejected.add(i)
    return rejected


def bh_rejects(ps: list[float], q: float) -> set[int]:
    """Benjamini & Hochberg (1995) step-up: reject the k smallest, k the largest with p_(k) <= k q / m."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    m = len(ps)
    k = max((rank + 1 for rank, i in enumerate(order) if ps[i] <= (rank + 1) * q / m), default=0)
    return set(order[:k])


def test_holm_on_the_wikipedia_worked_example() -> None:
    # Wikipedia, "Holm-Bonferroni method", example: p = 0.01, 0.04, 0.03, 0.005 at alpha = 0.05;
    # H4 (0.005 < 0.05/4) and H1 (0.01 < 0.05/3) are rejected, then 0.03 > 0.05/2 stops.
    ps = [0.01, 0.04, 0.03, 0.005]
    adjusted = adjust_p_values(ps, "holm")
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert {i for i, p in enumerate(adjusted) if p <= 0.05} == {0, 3} == holm_rejects(ps, 0.05)


def test_bh_on_the_benjamini_hochberg_1995_example() -> None:
    # Benjamini & Hochberg (1995), section 4: 15 p-values; at q = 0.05 the procedure rejects the
    # four smallest (Bonferroni only three).
    ps = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
          0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # fmt: skip
    adjusted = adjust_p_values(ps, "bh")
    assert {i for i, p in enumerate(adjusted) if p <= 0.05} == {0, 1, 2, 3} == bh_rejects(ps, 0.05)
    assert sum(p * 15 <= 0.05 for p in ps) == 3


@pytest.mark.parametrize(("method", "rejects"), [("holm", holm_rejects), ("bh", bh_rejects)])
def test_adjusted_p_values_reject_exactly_what_the_procedure_rejects(method, rejects) -> None:
    rng = random.Random(20260101)
    for _ in range(200):
        m = rng.randint(1, 9)
        ps = [round(rng.random() ** 3, 4) for _ in range(m)]
        adjusted = adjust_p_values(ps, method)
        assert all(a >= p for a, p in zip(adjusted, ps, strict=True)) and all(a <= 1.0 for a in adjusted)
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.2, 0.5):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == rejects(ps, alpha), (ps, alpha)


def test_nan_stays_nan_and_is_not_counted() -> None:
    with_nan = adjust_p_values([0.01, math.nan, 0.04], "holm")
    assert math.isnan(with_nan[1])
    assert [with_nan[0], with_nan[2]] == adjust_p_values([0.01, 0.04], "holm") == pytest.approx([0.02, 0.04])
    assert adjust_p_values([0.2, 0.01], "none") == [0.2, 0.01]
    assert adjust_p_values([], "bh") == []


def test_unknown_method_and_bad_p_values_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="holm, bh, none"):
        adjust_p_values([0.1], "bonferroni")
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        adjust_p_values([1.5])
    with pytest.raises(ValidationError, match="holm, bh, none"):
        Hypothesis(verifier=lambda b, t: {}, adjust="fdr")


def test_adjust_results_adds_keys_without_overwriting_and_leaves_the_originals() -> None:
    user = {"p_value": 0.01, "p_value_adjusted": "mine", "alpha": 0.05}
    results = {"a": user, "b": {"p_value": 0.04}, "c": {"score": 3}, "d": "not a mapping"}
    out = adjust_results(results, "holm")
    assert out["a"]["p_value_adjusted"] == "mine"  # the user's key wins
    assert out["a"]["significant_adjusted"] is True and out["a"]["adjustment"] == "holm"  # 0.02 < 0.05
    assert out["b"] == {"p_value": 0.04, "p_value_adjusted": 0.04, "significant_adjusted": True, "adjustment": "holm"}
    assert out["c"] == {"score": 3} and out["d"] == "not a mapping"
    assert "adjustment" not in user  # a copy was changed, not the verifier's dict


def test_significant_adjusted_uses_the_results_alpha() -> None:
    out = adjust_results({"a": {"p_value": 0.01, "alpha": 0.01}, "b": {"p_value": 0.3}}, "holm")
    assert out["a"]["p_value_adjusted"] == 0.02 and out["a"]["significant_adjusted"] is False
    nan = adjust_results({"a": {"p_value": math.nan}, "b": {"p_value": 0.01}}, "holm")
    assert math.isnan(nan["a"]["p_value_adjusted"]) and nan["a"]["significant_adjusted"] is False
    assert nan["b"]["p_value_adjusted"] == 0.01  # the NaN comparison is not counted


def test_several_metric_groups_are_adjusted_position_by_position() -> None:
    results = {
        "x": [{"p_value": 0.01}, {"p_value": 0.5}],
        "y": [{"p_value": 0.02}, {"p_value": 0.01}],
    }
    out = adjust_results(results, "holm")
    assert [g["p_value_adjusted"] for g in out["x"]] == [0.02, 0.5]
    assert [g["p_value_adjusted"] for g in out["y"]] == [0.02, 0.02]
    assert isinstance(out["x"], list)


def test_hypothesis_and_decorator_take_adjust() -> None:
    assert Hypothesis(verifier=lambda b, t: {}).adjust == "holm"

    @hypothesis(verifier=lambda b, t: {}, metrics="m", adjust="BH")
    def best(result):
        return 0.0

    assert best.adjust == "bh"
