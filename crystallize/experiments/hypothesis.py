"""Compatibility path; the real code is in `crystallize.hypothesis`."""

from crystallize.hypothesis import Hypothesis, rank_by_p_value

__all__ = ["Hypothesis", "rank_by_p_value"]
