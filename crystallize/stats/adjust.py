"""Multiple-comparison adjustment of p-values (Holm, Benjamini-Hochberg), NaN-aware.

A hypothesis compares every treatment with the same baseline; with several treatments the
chance that one of them looks significant by luck grows, so each raw p-value gets an
adjusted companion. NaN ("not computable") stays NaN and does not count as a comparison.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ValidationError

METHODS = ("holm", "bh", "none")
ADDED_KEYS = ("p_value_adjusted", "significant_adjusted", "adjustment")


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values in the input order: ``"holm"`` (family-wise), ``"bh"`` (false discovery rate) or ``"none"``."""
    method = check_method(method)
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValidationError(f"adjust_p_values: p-values lie in [0, 1], got {p!r}")
    finite = [i for i, p in enumerate(values) if not math.isnan(p)]
    out = [math.nan] * len(values)
    if not finite:
        return out
    ps = [values[i] for i in finite]
    if method == "none":
        adjusted = ps
    elif method == "holm":
        adjusted = _holm(ps)
    else:
        adjusted = [float(v) for v in _scipy().false_discovery_control(np.asarray(ps), method="bh")]
    for i, p in zip(finite, adjusted, strict=True):
        out[i] = float(p)
    return out


def check_method(method: str) -> str:
    """The method name, lower-cased; a ValidationError names the choices otherwise."""
    name = str(method).lower() if isinstance(method, str) else method
    if name not in METHODS:
        raise ValidationError(f"adjust={method!r} is not a known adjustment; use one of {', '.join(METHODS)}")
    return name


def _holm(ps: Sequence[float]) -> list[float]:
    """Holm (1979) step-down: the i-th smallest p times (m - i), made monotone, capped at 1."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def adjust_results(results: Mapping[str, Any], method: str = "holm") -> dict[str, Any]:
    """Per-treatment verifier results with ``p_value_adjusted``, ``significant_adjusted`` and ``adjustment`` added.

    One family per metric group: a hypothesis with several groups gives a list per treatment,
    and position i of every list is adjusted together. Only a mapping with a numeric
    ``p_value`` gains the keys, and never one it already has (the user's keys win). New dicts
    are returned; the verifier's own objects are left as they were.
    """
    method = check_method(method)
    lists = {name: _groups(result) for name, result in results.items()}
    width = max((len(groups) for groups in lists.values()), default=0)
    adjusted_groups = {name: list(groups) for name, groups in lists.items()}
    for position in range(width):
        family = [
            (name, groups[position])
            for name, groups in lists.items()
            if position < len(groups) and _p_value(groups[position]) is not None
        ]
        adjusted = adjust_p_values([float(result["p_value"]) for _, result in family], method)
        for (name, result), p_adjusted in zip(family, adjusted, strict=True):
            adjusted_groups[name][position] = _with_adjustment(result, p_adjusted, method)
    out: dict[str, Any] = {}
    for name, result in results.items():
        is_list = not isinstance(result, Mapping) and isinstance(result, Sequence) and not isinstance(result, str)
        out[name] = type(result)(adjusted_groups[name]) if is_list else adjusted_groups[name][0]
    return out


def _groups(result: Any) -> list[Any]:
    if not isinstance(result, Mapping) and isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        return list(result)
    return [result]


def _p_value(result: Any) -> float | None:
    """The result's p-value as a float (NaN included); None when absent, not a number, or outside [0, 1]."""
    if not isinstance(result, Mapping):
        return None
    p = result.get("p_value")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        return None
    value = float(p)
    return value if math.isnan(value) or 0.0 <= value <= 1.0 else None


def _with_adjustment(result: Mapping[str, Any], p_adjusted: float, method: str) -> Any:
    alpha = result.get("alpha")
    level = float(alpha) if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) else 0.05
    added = {
        "p_value_adjusted": p_adjusted,
        "significant_adjusted": bool(p_adjusted < level),  # NaN compares False
        "adjustment": method,
    }
    missing = {key: value for key, value in added.items() if key not in result}
    return {**result, **missing} if missing else result


def _scipy() -> Any:
    """scipy.stats, imported on first use: it costs more to import than the rest of crystallize."""
    from scipy import stats

    return stats
