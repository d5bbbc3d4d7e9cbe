"""The hypotheses table of ``crystallize show`` and of the summary after ``crystallize run``.

A built-in verifier's result (the keys of ``crystallize.stats``: ``test``, ``metric``, ``n_*``,
``difference`` with ``ci_low``/``ci_high``, ``effect``/``effect_size``, ``p_value`` and, over
several treatments, ``p_value_adjusted``) is laid out in columns, so a reader sees how large
the effect is and how sure the run is of it, not only a p-value. A user verifier's result is
an arbitrary mapping: it is shown as ``key=value`` text, as it always was. Whatever shape a
stored result has, rendering it never raises: ``show`` must open every run it can read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..results import HypothesisResult

DASH = "\u2014"
DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
# A mapping with a p-value and one of these is a statistical test's result (crystallize.stats' keys).
_STATS_MARKERS = ("test", "effect_size", "difference", "ci_low")
_SHOWN_KEYS = frozenset(
    {
        "test",
        "metric",
        "p_value",
        "significant",
        "alpha",
        "confidence",
        "statistic",
        "n_baseline",
        "n_treatment",
        "effect",
        "effect_size",
        "difference",
        "ci_low",
        "ci_high",
        "hedges_g",
        "mean_difference",
        "rank_biserial",
        "median_difference",
        "note",
        "p_value_adjusted",
        "significant_adjusted",
        "adjustment",
    }
)


# ---------------------------------------------------------------- numbers


def plain(value: Any) -> Any:
    """NumPy scalars as Python numbers, so they print as ``0.5``, not ``np.float64(0.5)``."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 and type(value).__module__ == "numpy":
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def number(value: Any) -> str:
    """A number as a person reads it: four significant digits, no exponent for ordinary sizes."""
    value = plain(value)
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return DASH
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if 1e4 <= abs(value) < 1e6:
            return f"{value:.0f}"
        return f"{value:.4g}"
    return safe_text(value)


def p_text(value: Any) -> str:
    """A p-value with two significant digits: ``0.031``, ``0.0031``, ``2.1e-07``."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH if value is None else safe_text(value)
    value = float(value)
    if math.isnan(value):
        return DASH
    if value == 0:
        return "0"
    return f"{value:.2g}"


def safe_text(value: Any) -> str:
    """``str(value)``, or its type's name when even that fails (a stored result must not break ``show``)."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - any user object may print badly; its type still tells something
        return f"<{type(value).__name__}>"


def _float(value: Any) -> float | None:
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# ---------------------------------------------------------------- shapes


def is_test_result(item: Any) -> bool:
    """Whether ``item`` carries a statistical test's keys (a built-in verifier's result, or one alike)."""
    return isinstance(item, Mapping) and "p_value" in item and any(key in item for key in _STATS_MARKERS)


def groups(result: Any) -> list[Any]:
    """One item per metric group: a verifier over several groups returns a list."""
    if isinstance(result, (list, tuple)):
        return list(result) or [result]
    return [result]


def describe(value: Any) -> str:
    """A user verifier's result as ``key=value`` pairs (plain numbers)."""
    try:
        if isinstance(value, Mapping):
            return "  ".join(f"{k}={_value(v)}" for k, v in value.items())
        return _value(value)
    except Exception:  # noqa: BLE001 - an odd mapping (a custom class) must not break show
        return safe_text(value)


def _value(value: Any) -> str:
    """As :func:`number`, but a user's booleans stay ``True``/``False`` (the keys are theirs)."""
    value = plain(value)
    return str(value) if isinstance(value, bool) else number(value)


# ---------------------------------------------------------------- cells of a test result


def n_cell(item: Mapping[str, Any]) -> str:
    baseline, treatment = item.get("n_baseline"), item.get("n_treatment")
    if baseline is None and treatment is None:
        return DASH
    return f"{number(baseline)}/{number(treatment)}"


def difference_cell(item: Mapping[str, Any]) -> str:
    """``2.03 [1.51, 2.56]``: the difference (treatment minus baseline) and its interval."""
    difference = item.get("difference", item.get("mean_difference", item.get("median_difference")))
    low, high = _float(item.get("ci_low")), _float(item.get("ci_high"))
    if low is None and high is None:
        return number(difference)
    decimals = _interval_decimals(low, high)
    if decimals is None:
        text, interval = number(difference), f"[{number(low)}, {number(high)}]"
    else:  # all three to the digits the interval's width warrants: 0.0020 [-0.0023, 0.0063]
        text = _fixed(difference, decimals)
        interval = f"[{_fixed(low, decimals)}, {_fixed(high, decimals)}]"
    confidence = _float(item.get("confidence"))
    if confidence is not None and not math.isclose(confidence, DEFAULT_CONFIDENCE):
        interval = f"{confidence * 100:g}% {interval}"
    return f"{text} {interval}"


def _interval_decimals(low: float | None, high: float | None) -> int | None:
    """Decimal places that show an interval's width to two significant digits (None: no finite width,
    or numbers so large or small that fixed decimals would not read well)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return None
    decimals = 1 - math.floor(math.log10(high - low))
    return decimals if 0 <= decimals <= 8 and max(abs(low), abs(high)) < 1e6 else None


def _fixed(value: Any, decimals: int) -> str:
    number_value = _float(plain(value))
    if number_value is None or not math.isfinite(number_value):
        return number(value)
    return f"{number_value:.{decimals}f}"


def effect_cell(item: Mapping[str, Any]) -> str:
    size = item.get("effect_size")
    name = item.get("effect")
    if size is None:
        return DASH
    return f"{safe_text(name)} {number(size)}" if name else number(size)


def adjusted_cell(item: Mapping[str, Any]) -> str:
    if "p_value_adjusted" not in item:
        return DASH
    method = item.get("adjustment")
    text = p_text(item["p_value_adjusted"])
    return f"{text} ({safe_text(method)})" if method and text != DASH else text


def significant_cell(item: Mapping[str, Any]) -> Text:
    """The adjusted verdict when there is one (the honest one over several treatments), else the test's."""
    key = "significant_adjusted" if "significant_adjusted" in item else "significant"
    verdict = plain(item.get(key))
    if verdict is None:
        return Text(DASH)
    text = Text("yes" if verdict else "no", style="green" if verdict else "")
    alpha = _float(item.get("alpha"))
    if alpha is not None and not math.isclose(alpha, DEFAULT_ALPHA):
        text.append(f" (\u03b1={number(alpha)})")
    return text


def note_text(item: Mapping[str, Any]) -> str:
    """The result's own note, then any keys the columns do not show (a user's extra keys)."""
    parts = []
    if item.get("note"):
        parts.append(safe_text(item["note"]))
    extra = {k: v for k, v in item.items() if k not in _SHOWN_KEYS}
    if extra:
        parts.append(describe(extra))
    return "; ".join(parts)


# ---------------------------------------------------------------- tables


def hypotheses_view(hypotheses: Sequence[HypothesisResult]) -> RenderableType:
    """The hypotheses' results: a table of tests for the hypotheses whose verifier is a statistical
    test; today's ``key=value`` table for the others (user verifiers' own result shapes)."""
    tests: list[HypothesisResult] = []
    others: list[HypothesisResult] = []
    for hyp in hypotheses:
        (tests if _has_test_results(hyp) else others).append(hyp)
    parts: list[RenderableType] = []
    if tests:
        parts.append(tests_table(tests))
    if others:
        parts.append(results_table(others))
    return parts[0] if len(parts) == 1 else Group(*parts)


def _has_test_results(hyp: HypothesisResult) -> bool:
    try:
        return any(is_test_result(item) for result in dict(hyp.results).values() for item in groups(result))
    except Exception:  # noqa: BLE001 - a damaged result shape: shown as text
        return False


def _treatments(hyp: HypothesisResult) -> list[str]:
    try:
        return list(dict.fromkeys([*dict(hyp.results), *dict(hyp.errors or {})]))
    except Exception:  # noqa: BLE001
        return []


def _rank(hyp: HypothesisResult, treatment: str) -> str:
    try:
        ranking = hyp.ranking if isinstance(hyp.ranking, Mapping) else {}
        ranked = [item[0] for item in ranking.get("ranked", []) or []]
        rank = str(ranked.index(treatment) + 1) if treatment in ranked else DASH
        if treatment == ranking.get("best"):
            rank += " (best)"
        return rank
    except Exception:  # noqa: BLE001
        return DASH


def _dropped(hyp: HypothesisResult, treatment: str) -> int:
    try:
        return int((hyp.dropped_pairs or {}).get(treatment, 0))
    except Exception:  # noqa: BLE001
        return 0


def tests_table(hypotheses: Sequence[HypothesisResult]) -> Table:
    """One row per (hypothesis, treatment, metric group) of statistical tests."""
    rows: list[tuple[str, str, list[RenderableType], bool]] = []  # hypothesis, treatment, cells, last of its hyp
    show_dropped = any(_dropped(h, t) for h in hypotheses for t in _treatments(h))
    for hyp in hypotheses:
        names = _treatments(hyp)
        hyp_rows: list[tuple[str, str, list[RenderableType]]] = []
        for treatment in names:
            for index, cells in enumerate(_test_rows(hyp, treatment)):
                extra: list[RenderableType] = []
                if show_dropped:
                    extra.append(str(_dropped(hyp, treatment)) if index == 0 else "")
                extra.append(_rank(hyp, treatment) if index == 0 else "")
                hyp_rows.append((hyp.name, treatment if index == 0 else "", [*cells[:-1], *extra, cells[-1]]))
        if not names:
            empty: list[RenderableType] = [*_dashes(8), *([""] if show_dropped else []), "", "no treatments compared"]
            hyp_rows.append((hyp.name, DASH, empty))
        for position, (name, treatment, cells) in enumerate(hyp_rows):
            rows.append(
                (safe_text(name) if position == 0 else "", safe_text(treatment), cells, position == len(hyp_rows) - 1)
            )
    show_note = any(_has_content(cells[-1]) for _, _, cells, _ in rows)
    table = Table(
        title="hypotheses",
        title_justify="left",
        title_style="bold",
        caption=Text(
            "difference: treatment minus baseline [its 95% interval, unless another is marked]; "
            "significant: at the adjusted p-value where there is one"
        ),
        caption_justify="left",
    )
    for column, justify in (
        ("hypothesis", "left"),
        ("treatment", "left"),
        ("test", "left"),
        ("metric", "left"),
        ("n", "right"),
        ("difference [CI]", "right"),
        ("effect", "right"),
        ("p", "right"),
        ("p adjusted", "right"),
        ("significant", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if show_dropped:
        table.add_column("dropped pairs", justify="right")
    table.add_column("rank", justify="right")
    if show_note:
        table.add_column("note", max_width=60)
    for name, treatment, cells, last in rows:
        shown = cells if show_note else cells[:-1]
        table.add_row(*(_cell(c) for c in (name, treatment, *shown)), end_section=last)
    return table


def _cell(cell: RenderableType) -> RenderableType:
    """Text, never markup: a name or a user's value with ``[brackets]`` prints as it is."""
    return Text(cell) if isinstance(cell, str) else cell


def _has_content(cell: RenderableType) -> bool:
    return bool(cell.plain if isinstance(cell, Text) else cell)


def _dashes(count: int) -> list[RenderableType]:
    return [DASH] * count


def _test_rows(hyp: HypothesisResult, treatment: str) -> list[list[RenderableType]]:
    """The cells (test .. significant, then the note) of each metric group of one treatment."""
    errors = hyp.errors or {}
    if treatment in errors:
        return [[*_dashes(8), Text(f"error: {safe_text(errors[treatment])}", style="red")]]
    rows: list[list[RenderableType]] = []
    for item in groups(dict(hyp.results).get(treatment)):
        try:
            rows.append(_test_cells(item))
        except Exception:  # noqa: BLE001 - an unexpected value under a known key: shown as text
            rows.append([*_dashes(8), describe(item)])
    return rows


def _test_cells(item: Any) -> list[RenderableType]:
    if not is_test_result(item):
        return [*_dashes(8), describe(item)]
    return [
        safe_text(item.get("test", DASH)),
        safe_text(item.get("metric", DASH)),
        n_cell(item),
        difference_cell(item),
        effect_cell(item),
        p_text(item.get("p_value")),
        adjusted_cell(item),
        significant_cell(item),
        note_text(item),
    ]


def results_table(hypotheses: Sequence[HypothesisResult]) -> Table:
    """User verifiers' results as ``key=value`` text, one row per treatment and metric group."""
    table = Table(title="hypotheses", title_justify="left", title_style="bold")
    table.add_column("hypothesis")
    table.add_column("treatment")
    table.add_column("result", max_width=80)
    table.add_column("dropped pairs", justify="right")
    table.add_column("rank", justify="right")
    for hyp in hypotheses:
        names = _treatments(hyp)
        for treatment in names:
            errors = hyp.errors or {}
            if treatment in errors:
                texts = [Text(f"error: {safe_text(errors[treatment])}", style="red")]
            else:
                texts = [Text(describe(item)) for item in groups(dict(hyp.results).get(treatment))]
            for index, text in enumerate(texts):
                first = index == 0
                table.add_row(
                    Text(safe_text(hyp.name)),
                    Text(safe_text(treatment)),
                    text,
                    str(_dropped(hyp, treatment)) if first else "",
                    _rank(hyp, treatment) if first else "",
                )
        if not names:
            table.add_row(Text(safe_text(hyp.name)), DASH, "no treatments compared", "", "")
    return table
