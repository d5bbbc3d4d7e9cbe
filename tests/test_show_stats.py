"""``crystallize show`` (and the summary after ``run``) report each test's effect size, interval and
adjusted p-value; user verifiers' own result shapes still show as before, and no shape breaks ``show``."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from crystallize.cli.main import main
from crystallize.cli.stats_table import difference_cell, hypotheses_view, number, p_text
from crystallize.results import HypothesisResult


def render(hypotheses: list[HypothesisResult], width: int = 250) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(hypotheses_view(hypotheses))
    return console.export_text()


def row(text: str, *needles: str) -> str:
    """The one line of the table that holds every needle."""
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(found) == 1, (needles, text)
    return found[0]


def welch(metric: str, p: float, adjusted: float, **changes: Any) -> dict[str, Any]:
    """A result with the keys crystallize.stats' verifiers return (contract section 1), Holm-adjusted."""
    result = {
        "test": "welch_t",
        "metric": metric,
        "p_value": p,
        "significant": p < 0.05,
        "alpha": 0.05,
        "confidence": 0.95,
        "statistic": 3.2,
        "n_baseline": 10,
        "n_treatment": 12,
        "effect": "hedges_g",
        "effect_size": 1.2345,
        "hedges_g": 1.2345,
        "difference": 2.0312,
        "mean_difference": 2.0312,
        "ci_low": 1.5104,
        "ci_high": 2.5522,
        "p_value_adjusted": adjusted,
        "significant_adjusted": adjusted < 0.05,
        "adjustment": "holm",
    }
    result.update(changes)
    return result


def test_a_test_result_shows_n_difference_interval_effect_p_and_adjusted_p() -> None:
    hyp = HypothesisResult(
        "score_up",
        {"a": welch("score", 0.0031, 0.0062), "b": welch("score", 2.1e-7, 6.3e-7), "c": welch("score", 0.04, 0.08)},
        {"best": "b", "ranked": [("b", 2.1e-7), ("a", 0.0031), ("c", 0.04)]},
    )
    text = render([hyp])
    for column in ("test", "metric", "n", "difference [CI]", "effect", "p adjusted", "significant", "rank"):
        assert column in text
    a = row(text, "score_up", " a ")
    for cell in (
        "welch_t",
        "score",
        "10/12",
        "2.0 [1.5, 2.6]",  # to the digits the interval's width (1.04) warrants
        "hedges_g 1.234",
        "0.0031",
        "0.0062 (holm)",
        "yes",
    ):
        assert cell in a, (cell, a)
    b = row(text, " b ", "2.1e-07")
    assert "6.3e-07 (holm)" in b and "1 (best)" in b
    c = row(text, " c ", "0.04")
    assert "0.08 (holm)" in c and "no" in c.split("(holm)")[1]  # significant alone, not after adjustment
    assert "np." not in text and "True" not in text


def test_intervals_other_than_95_alpha_notes_and_groups_each_get_their_own_row() -> None:
    degenerate = welch(
        "y", math.nan, math.nan, significant=False, significant_adjusted=False, note="constant data: both sides are 1.0"
    )
    hyp = HypothesisResult(
        "two_metrics",
        {"a": [welch("x", 0.01, 0.02, confidence=0.9, alpha=0.01, significant_adjusted=False), degenerate]},
        {"best": "a", "ranked": [("a", 0.01)]},
        dropped_pairs={"a": 2},
    )
    text = render([hyp])
    x = row(text, "two_metrics", " x ")
    assert "2.0 90% [1.5, 2.6]" in x and "(\u03b1=0.01)" in x and "1 (best)" in x
    assert "no" in x.split("(holm)")[1]  # 0.02 is not below alpha 0.01
    y = row(text, " y ", "constant data: both sides are 1.0")
    assert "welch_t" in y and "(holm)" not in y  # a NaN adjusted p-value is a dash, not "— (holm)"
    assert "dropped pairs" in text and " 2 " in x


class Hostile(Mapping[str, Any]):
    """A mapping that breaks as soon as it is read."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no")

    def __len__(self) -> int:
        return 1

    def __str__(self) -> str:
        raise RuntimeError("no str either")


def test_user_results_keep_their_key_value_text_and_no_shape_breaks_show() -> None:
    user = HypothesisResult(
        "by_p_value",
        {"a": {"p_value": np.float64(0.0123), "significant": np.True_, "p_value_adjusted": 0.0246}},
        {"best": "a", "ranked": [("a", 0.0123)]},
    )
    text = render([user])
    assert "p_value=0.0123  significant=True  p_value_adjusted=0.0246" in row(text, "by_p_value", " a ")
    assert "dropped pairs" in text and "(best)" in text and "np." not in text

    odd = [
        HypothesisResult("objects", {"a": object(), "b": [1, "two", None], "c": Hostile()}, {"best": None}),
        HypothesisResult("ranking", {"a": {"x": 1}}, "not a mapping"),  # type: ignore[arg-type]
        HypothesisResult("bad_keys", {"a": welch("m", 0.5, 0.5, n_baseline="ten", ci_low="low")}, {}),
        HypothesisResult("mixed", {"a": welch("m", 0.5, 0.5), "b": 3.5, "c": Hostile()}, {}, errors={"d": "boom"}),
        HypothesisResult("empty", {}, {}),
        HypothesisResult("[bold]markup[/bold]", {"[red]t[/red]": {"v": "[b]x[/b]"}}, {}),
    ]
    text = render(odd)
    assert "<object object at" in row(text, "objects", " a ")
    assert row(text, " b ", "two")
    assert "<Hostile>" in text
    assert row(text, " d ", "error: boom")
    assert "3.5" in text and "no treatments compared" in text
    assert "ten/" in text  # the odd value as text, not a crash
    assert "[bold]markup[/bold]" in text and "[red]t[/red]" in text and "v=[b]x[/b]" in text


def test_numbers_print_as_plain_numbers() -> None:
    assert [p_text(v) for v in (0.0031, 2.1e-7, 0.5, 0.0, math.nan, np.float64(0.042))] == [
        "0.0031",
        "2.1e-07",
        "0.5",
        "0",
        "\u2014",
        "0.042",
    ]
    assert [number(v) for v in (np.float64(0.5), 12345.6, -2.0, np.int64(3), 1.23456e-5, True)] == [
        "0.5",
        "12346",
        "-2",
        "3",
        "1.235e-05",
        "yes",
    ]
    assert difference_cell({"difference": 1.0, "ci_low": 0.5, "ci_high": 1.5}) == "1.0 [0.5, 1.5]"
    assert difference_cell({"difference": 0.002, "ci_low": -0.00231, "ci_high": 0.00631}) == "0.0020 [-0.0023, 0.0063]"
    assert difference_cell({"difference": 250.0, "ci_low": 100.0, "ci_high": 400.0}) == "250 [100, 400]"


EXPERIMENT = """
from crystallize import (
    Experiment, Hypothesis, Pipeline, SerialExecution, Treatment, data_source, pipeline_step, welch_t_test
)


@data_source
def noise(ctx):
    return ctx.rng.normal(0.0, 1.0, size=20)


@pipeline_step()
def shift(data, ctx, *, delta: float = 0.0):
    return data, {"score": float(data.mean() + delta)}


experiment = Experiment(
    datasource=noise(),
    pipeline=Pipeline([shift()]),
    treatments=[
        Treatment("none", {"delta": 0.0}), Treatment("some", {"delta": 0.3}), Treatment("lots", {"delta": 2.0})
    ],
    hypotheses=[Hypothesis(verifier=welch_t_test(), metrics="score", name="score_moves")],
    plugins=[SerialExecution(progress=False)],
    replicates=8,
    name="three",
)
"""


def test_a_real_run_with_a_builtin_test_shows_its_numbers_after_run_and_in_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crystallize.runs import load_run

    monkeypatch.delenv("CRYSTALLIZE_DATA_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "three.py").write_text(EXPERIMENT)
    assert main(["run", "three.py", "--seed", "5", "--quiet"]) == 0
    after_run = capsys.readouterr().out
    assert main(["show", "three"]) == 0
    shown = capsys.readouterr().out

    stored = load_run(str(tmp_path / "data" / "three" / "v0")).get_hypothesis("score_moves").results
    assert set(stored) == {"none", "some", "lots"}
    for text in (after_run, shown):
        for treatment, result in stored.items():
            line = row(text, f" {treatment} ", "welch_t")
            assert result["adjustment"] == "holm" and result["n_baseline"] == result["n_treatment"] == 8
            for cell in (
                "score",
                "8/8",
                difference_cell(result),
                f"hedges_g {number(result['effect_size'])}",
                p_text(result["p_value"]),
                f"{p_text(result['p_value_adjusted'])} (holm)",
                "yes" if result["significant_adjusted"] else "no",
            ):
                assert cell in line, (cell, line)
    assert stored["lots"]["significant_adjusted"] is True  # a shift of two standard deviations of the noise
    assert "(best)" in row(shown, " lots ", "welch_t")
