"""The statistical check named in config.yaml."""

from __future__ import annotations

from scipy.stats import ttest_ind

from crystallize import verifier


@verifier
def welch_t_test(baseline, treatment, alpha: float = 0.05):
    """Welch's t-test on ``total``: does the treatment change it?"""
    _stat, p_value = ttest_ind(treatment["total"], baseline["total"], equal_var=False)
    return {"p_value": float(p_value), "significant": bool(p_value < alpha)}
