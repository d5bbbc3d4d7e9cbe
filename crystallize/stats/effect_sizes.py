"""Effect sizes scipy does not provide: Hedges' g and the rank-biserial correlation.

Sign convention everywhere: positive means the treatment is larger than the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def hedges_correction(n_total: int) -> float:
    """Small-sample bias factor J = 1 - 3 / (4 (n1 + n2) - 9) (Hedges & Olkin 1985; as in Lakens 2013, eq. 4)."""
    return 1.0 - 3.0 / (4.0 * n_total - 9.0)


def hedges_g(baseline: Sequence[float], treatment: Sequence[float]) -> float:
    """Hedges' g_s of independent samples: Cohen's d_s (pooled SD) times the bias factor; NaN if undefined."""
    b = np.asarray(baseline, dtype=float)
    t = np.asarray(treatment, dtype=float)
    n1, n2 = len(b), len(t)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = ((n1 - 1) * b.var(ddof=1) + (n2 - 1) * t.var(ddof=1)) / (n1 + n2 - 2)
    if not pooled > 0:
        return math.nan
    return float((t.mean() - b.mean()) / math.sqrt(pooled) * hedges_correction(n1 + n2))


def hedges_g_paired(baseline: Sequence[float], treatment: Sequence[float]) -> float:
    """Hedges' g_av of paired samples: the mean difference over the average SD of both sides, bias-corrected.

    Lakens (2013) recommends g_av for within-subject designs: unlike d_z it does not grow with
    the correlation the pairing removes, so it reads like the independent g.
    """
    b = np.asarray(baseline, dtype=float)
    t = np.asarray(treatment, dtype=float)
    n = len(b)
    if n < 2 or len(t) != n:
        return math.nan
    average_sd = (b.std(ddof=1) + t.std(ddof=1)) / 2.0
    if not average_sd > 0:
        return math.nan
    return float((t - b).mean() / average_sd * hedges_correction(2 * n))


def rank_biserial(baseline: Sequence[float], treatment: Sequence[float]) -> float:
    """Rank-biserial r of independent samples, Kerby's (2014) simple difference formula.

    r = (share of (treatment, baseline) pairs where the treatment is larger) minus (share where it
    is smaller); ties count for neither. Equal to 2 U / (n1 n2) - 1 with U the treatment's U.
    """
    b = np.asarray(baseline, dtype=float)
    t = np.asarray(treatment, dtype=float)
    n1, n2 = len(b), len(t)
    if n1 == 0 or n2 == 0:
        return math.nan
    ranks = _scipy().rankdata(np.concatenate([t, b]))
    u_treatment = ranks[: len(t)].sum() - n2 * (n2 + 1) / 2.0
    return float(2.0 * u_treatment / (n1 * n2) - 1.0)


def rank_biserial_paired(baseline: Sequence[float], treatment: Sequence[float]) -> float:
    """Matched-pairs rank-biserial r (Kerby 2014): (favourable rank sum - unfavourable rank sum) / total rank sum.

    Ranks are those of |treatment - baseline| with zero differences dropped, as the Wilcoxon
    signed-rank test (``zero_method="wilcox"``) drops them; NaN when every difference is zero.
    """
    d = np.asarray(treatment, dtype=float) - np.asarray(baseline, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return math.nan
    ranks = _scipy().rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def _scipy() -> Any:
    """scipy.stats, imported on first use: it costs more to import than the rest of crystallize."""
    from scipy import stats

    return stats
