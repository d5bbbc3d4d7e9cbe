"""Built-in statistics: two-sample tests, effect sizes and multiple-comparison adjustment.

The verifier factories built on them live in ``crystallize.stats.verifiers`` and are exported
from ``crystallize`` (``welch_t_test``, ``paired_t_test`` ...); they are not imported here, so
importing this package never imports the decorators (``crystallize.hypothesis`` imports
``crystallize.stats.adjust``).
"""

from __future__ import annotations

from .adjust import adjust_p_values
from .effect_sizes import hedges_g, hedges_g_paired, rank_biserial, rank_biserial_paired
from .tests import bootstrap_ci, mann_whitney, paired_t, permutation, welch_t, wilcoxon

__all__ = [
    "adjust_p_values",
    "bootstrap_ci",
    "hedges_g",
    "hedges_g_paired",
    "mann_whitney",
    "paired_t",
    "permutation",
    "rank_biserial",
    "rank_biserial_paired",
    "welch_t",
    "wilcoxon",
]
