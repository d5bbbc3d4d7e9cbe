"""Hedges' g and the rank-biserial correlation against published worked examples and their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from crystallize.stats import hedges_g, hedges_g_paired, rank_biserial, rank_biserial_paired
from crystallize.stats.effect_sizes import hedges_correction

# Lakens, D. (2013). Calculating and reporting effect sizes to facilitate cumulative science:
# a practical primer for t-tests and ANOVAs. Frontiers in Psychology 4:863, Table 1: ratings
# of two movies by ten people, M = 8.7 (SD 0.82) and 7.7 (SD 0.95). Published: between subjects
# t(18) = 2.52, p = 0.022, Cohen's d_s = 1.13, Hedges' g_s = 1.08; within subjects t(9) = 4.74,
# p = 0.001, d_z = 1.50, d_av = 1.13.
MOVIE_1 = [9, 7, 8, 9, 8, 9, 9, 10, 9, 9]
MOVIE_2 = [9, 6, 7, 8, 7, 9, 8, 8, 8, 7]


def test_lakens_2013_table_1_data_reproduce_the_published_summary() -> None:
    assert (np.mean(MOVIE_1), np.mean(MOVIE_2)) == (8.7, 7.7)
    assert round(np.std(MOVIE_1, ddof=1), 2) == 0.82 and round(np.std(MOVIE_2, ddof=1), 2) == 0.95
    between, within = stats.ttest_ind(MOVIE_1, MOVIE_2), stats.ttest_rel(MOVIE_1, MOVIE_2)
    assert round(between.statistic, 2) == 2.52 and round(between.pvalue, 3) == 0.022
    assert round(within.statistic, 2) == 4.74 and round(within.pvalue, 3) == 0.001


def test_hedges_g_on_the_lakens_example() -> None:
    # The published g_s = 1.08 (d_s = 1.13 times the bias factor 1 - 3 / (4 * 20 - 9)).
    assert round(hedges_g(MOVIE_2, MOVIE_1), 2) == 1.08
    assert round(hedges_g(MOVIE_1, MOVIE_2), 2) == -1.08  # sign: treatment minus baseline
    assert round(hedges_g(MOVIE_2, MOVIE_1) / hedges_correction(20), 2) == 1.13  # Cohen's d_s
    # Within subjects we report g_av, the published d_av = 1.13 with the same correction; not d_z
    # (1.50), which grows with the correlation of the pairs.
    assert round(hedges_g_paired(MOVIE_2, MOVIE_1) / hedges_correction(20), 2) == 1.13
    differences = np.subtract(MOVIE_1, MOVIE_2)
    assert round(differences.mean() / differences.std(ddof=1), 2) == 1.50  # d_z, for contrast


def test_hedges_correction_is_close_to_the_exact_gamma_form() -> None:
    # Hedges (1981): J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), df = n1 + n2 - 2.
    for n_total in (10, 20, 100):
        df = n_total - 2
        exact = special.gamma(df / 2) / (math.sqrt(df / 2) * special.gamma((df - 1) / 2))
        assert hedges_correction(n_total) == pytest.approx(exact, abs=2e-3)


def test_hedges_g_matches_its_definition_on_unequal_groups() -> None:
    b, t = [3.1, 2.4, 5.0, 4.2, 3.3], [4.0, 5.5, 6.1, 3.9, 5.2, 6.6, 4.8]
    n1, n2 = len(b), len(t)
    pooled = math.sqrt(((n1 - 1) * np.var(b, ddof=1) + (n2 - 1) * np.var(t, ddof=1)) / (n1 + n2 - 2))
    d = (np.mean(t) - np.mean(b)) / pooled
    assert hedges_g(b, t) == pytest.approx(d * (1 - 3 / (4 * (n1 + n2) - 9)), rel=1e-12)
    assert math.isnan(hedges_g([1.0, 1.0], [2.0, 2.0])) and math.isnan(hedges_g([1.0], [2.0, 3.0]))


# Aesop's tortoises and hares (the worked example of the Wikipedia article "Mann-Whitney U test"):
# finishing order T H H H H H T T T T T H, published U_T = 11 and U_H = 25. With the hares as the
# treatment (finishing earlier = better, so rank by minus the position), Kerby's (2014) simple difference
# formula gives r = f - u = 25/36 - 11/36 = 0.3889.
ORDER = "THHHHHTTTTTH"
TORTOISES = [-(i + 1) for i, who in enumerate(ORDER) if who == "T"]
HARES = [-(i + 1) for i, who in enumerate(ORDER) if who == "H"]


def test_rank_biserial_on_the_tortoise_and_hare_example() -> None:
    assert stats.mannwhitneyu(HARES, TORTOISES).statistic == 25  # U_H, as published
    assert stats.mannwhitneyu(TORTOISES, HARES).statistic == 11  # U_T
    assert rank_biserial(TORTOISES, HARES) == pytest.approx(14 / 36)
    assert rank_biserial(HARES, TORTOISES) == pytest.approx(-14 / 36)


def test_rank_biserial_is_the_simple_difference_of_pair_proportions() -> None:
    # Kerby (2014), "The simple difference formula": r = (favourable pairs - unfavourable pairs) / all pairs.
    b, t = [1.0, 2.0, 2.0, 5.0, 7.0], [2.0, 3.0, 6.0, 8.0]
    pairs = list(itertools.product(t, b))
    favourable = sum(x > y for x, y in pairs)
    unfavourable = sum(x < y for x, y in pairs)
    assert rank_biserial(b, t) == pytest.approx((favourable - unfavourable) / len(pairs))
    assert rank_biserial([1.0, 2.0], [3.0, 4.0]) == 1.0 and rank_biserial([3.0, 4.0], [1.0, 2.0]) == -1.0


# Matched pairs: the worked example of the Wikipedia article "Wilcoxon signed-rank test" (10 pairs,
# one zero difference dropped, published W = 9 from T+ = 27 and T- = 18). Kerby (2014) for matched
# pairs: r = (favourable rank sum - unfavourable rank sum) / total rank sum = (27 - 18) / 45 = 0.2.
X2 = [125, 115, 130, 140, 140, 115, 140, 125, 140, 135]
X1 = [110, 122, 125, 120, 140, 124, 123, 137, 135, 145]


def test_matched_pairs_rank_biserial_on_the_wilcoxon_example() -> None:
    assert stats.wilcoxon(X2, X1).statistic == 18  # min(T+, T-): T- = 18, so T+ = 45 - 18 = 27
    assert rank_biserial_paired(X1, X2) == pytest.approx(0.2)
    assert rank_biserial_paired(X2, X1) == pytest.approx(-0.2)


def test_matched_pairs_rank_biserial_matches_its_definition() -> None:
    b = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0]
    t = [3.5, 0.0, 4.0, 3.0, 5.5, 8.0, 2.0, 9.0]
    d = np.subtract(t, b)
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    expected = (ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum()
    assert rank_biserial_paired(b, t) == pytest.approx(expected)
    assert math.isnan(rank_biserial_paired([1.0, 2.0], [1.0, 2.0]))
