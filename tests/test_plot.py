"""``crystallize show --plot``: the figures looked at as a user looks at them.

Real runs (``Experiment.run`` / ``Experiment.optimize`` on the serial executor) are drawn with
``build_figure`` and the Figure is inspected: its panels, labels, tick labels, the numbers
written on it and the intervals drawn; the CLI test checks the PNG a user gets.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as scipy_stats

from crystallize import Experiment, SeedPlugin, data_source, pipeline_step, treatment
from crystallize.cli.plot import build_figure, plot_run
from crystallize.cli.plot_optimize import parse_value
from crystallize.optimizers import GridSearchOptimizer, Objective
from crystallize.plugins import ArtifactPlugin
from crystallize.stats.adjust import adjust_p_values
from crystallize.stats.tests import welch_t

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@data_source
def noise(ctx: Any) -> float:
    return float(ctx.rng.normal(0.0, 1.0))


@pipeline_step()
def score(data: float, ctx: Any, *, delta: float = 0.0, mode: str = "plain") -> tuple[float, dict[str, Any]]:
    bonus = 0.25 if mode == "fancy" else 0.0
    value = data + delta + bonus
    return data, {"accuracy": value, "loss": value * value + float(ctx.rng.exponential(0.5)), "label": "x"}


def experiment(name: str, replicates: int, treatments: Sequence[Any] = (), **extra: Any) -> Experiment:
    """A seeded experiment (the same numbers every time the suite runs)."""
    builder = Experiment.builder(name).datasource(noise()).add_step(score()).replicates(replicates)
    builder = builder.plugins([SeedPlugin(seed=13), *extra.get("plugins", [])])
    if treatments:
        builder = builder.treatments(list(treatments))
    if "hypotheses" in extra:
        builder = builder.hypotheses(extra["hypotheses"])
    return builder.build()


THREE = [treatment("small", {"delta": 0.1}), treatment("big", {"delta": 1.5}), treatment("worse", {"delta": -0.8})]
CONDITIONS = ["baseline", "small", "big", "worse"]


def texts(axes: Any) -> list[str]:
    return [t.get_text() for t in axes.texts]


def condition_text(axes: Any, position: int) -> str:
    """The n / p_adj / effect block written above condition ``position`` (1-based)."""
    (found,) = [t.get_text() for t in axes.texts if t.get_text().startswith("n=") and t.get_position()[0] == position]
    return found


def intervals(axes: Any) -> list[float]:
    """x, low, high of every vertical error bar drawn on ``axes``, flat and sorted by x."""
    from matplotlib.collections import LineCollection

    out = []
    for collection in axes.collections:
        if isinstance(collection, LineCollection):
            for segment in collection.get_segments():
                (x0, y0), (x1, y1) = segment[0], segment[-1]
                if x0 == x1:
                    out.append((float(x0), float(min(y0, y1)), float(max(y0, y1))))
    return [value for bar in sorted(out) for value in bar]


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=scipy_stats.tmean(values), scale=scipy_stats.sem(values)
    )
    return float(low), float(high)


def mean_line(values: Sequence[float]) -> str:
    """The mean and the half-width of its 95% t-interval, as the figure writes them."""
    low, high = t_interval(values)
    return f"{scipy_stats.tmean(values):.4g}\u00b1{(high - low) / 2:.2g}"


def fmt_p(p: float) -> str:
    return "p_adj<0.001" if p < 0.001 else f"p_adj={p:.2g}"


# ---------------------------------------------------------------- runs with treatments


@pytest.fixture(scope="module")
def three_treatments(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One run shared by the read-only tests; made in a folder of its own (``data/`` lands there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("three"))
        return experiment("three", 24, THREE).run()


def test_one_panel_per_numeric_metric_labelled_with_metric_and_conditions(three_treatments: Any) -> None:
    figure = build_figure(three_treatments)
    axes_list = figure.axes
    assert [a.get_title() for a in axes_list] == ["accuracy", "loss"]  # "label" is not numeric: no panel
    for axes, metric in zip(axes_list, ["accuracy", "loss"], strict=True):
        assert axes.get_ylabel() == metric
        assert axes.get_xlabel() == "condition"
        assert [t.get_text() for t in axes.get_xticklabels()] == CONDITIONS
    assert figure.get_suptitle() == "three v0"


def test_each_treatment_shows_welch_holm_p_adj_and_hedges_g_and_n(three_treatments: Any) -> None:
    figure = build_figure(three_treatments)
    per_condition = dict(three_treatments.metrics.conditions())
    for axes in figure.axes:
        metric = axes.get_title()
        assert "p_adj and effect vs baseline: Welch t, Holm-adjusted" in texts(axes)
        baseline = per_condition["baseline"].metrics[metric]
        results = [welch_t(baseline, per_condition[c].metrics[metric]) for c in CONDITIONS[1:]]
        adjusted = adjust_p_values([r["p_value"] for r in results], method="holm")
        assert condition_text(axes, 1) == f"n=24\n{mean_line(baseline)}\n(reference)"
        for position, (result, p_adj) in enumerate(zip(results, adjusted, strict=True), start=2):
            values = per_condition[CONDITIONS[position - 1]].metrics[metric]
            expected = f"n=24\n{mean_line(values)}\n{fmt_p(p_adj)}\ng={result['effect_size']:+.2f}"
            assert condition_text(axes, position) == expected
    big = condition_text(figure.axes[0], 3)
    assert "p_adj<0.001" in big  # delta 1.5 with 24 replicates: clearly significant
    weights = {t.get_text(): t.get_fontweight() for t in figure.axes[0].texts}
    assert weights[big] == "bold"  # significant after adjustment
    assert weights[condition_text(figure.axes[0], 1)] == "normal"  # the baseline


def test_each_condition_shows_its_mean_with_the_95_percent_t_interval(three_treatments: Any) -> None:
    figure = build_figure(three_treatments)
    per_condition = dict(three_treatments.metrics.conditions())
    for axes in figure.axes:
        metric = axes.get_title()
        drawn = intervals(axes)
        expected = [v for i, c in enumerate(CONDITIONS, 1) for v in (i, *t_interval(per_condition[c].metrics[metric]))]
        assert drawn == pytest.approx(expected, rel=1e-9)


def test_a_hypothesis_result_is_shown_instead_of_welch_for_its_metric(tmp_path: Path) -> None:
    """A stored run with a built-in rank test: its Holm-adjusted p and rank-biserial r, read back from run.json."""
    from crystallize import Hypothesis, mann_whitney_test
    from crystallize.runs import load_run

    hypothesis = Hypothesis(verifier=mann_whitney_test(), metrics="accuracy", name="ranks")
    plugins = [ArtifactPlugin(root_dir=str(tmp_path / "data"))]
    experiment("declared", 8, THREE[:2], hypotheses=[hypothesis], plugins=plugins).run()
    result = load_run(tmp_path / "data/declared/v0")
    accuracy, loss = build_figure(result).axes
    assert "p_adj and effect vs baseline: hypothesis 'ranks' (Mann\u2013Whitney U, Holm-adjusted)" in texts(accuracy)
    for position, name in ((2, "small"), (3, "big")):
        stored = result.metrics.hypotheses[0].results[name]
        assert stored["adjustment"] == "holm" and stored["effect"] == "rank_biserial"
        values = dict(result.metrics.conditions())[name].metrics["accuracy"]
        expected = f"n=8\n{mean_line(values)}\n{fmt_p(stored['p_value_adjusted'])}\nr_rb={stored['effect_size']:+.2f}"
        assert condition_text(accuracy, position) == expected
    assert "p_adj and effect vs baseline: Welch t, Holm-adjusted" in texts(loss)  # no hypothesis on loss


def test_two_thousand_replicates_per_condition_read_as_a_distribution(tmp_path: Path) -> None:
    from matplotlib.collections import PathCollection, PolyCollection

    result = experiment("many", 2000, THREE[1:2]).run()
    figure = build_figure(result)
    accuracy = figure.axes[0]
    assert condition_text(accuracy, 1).startswith("n=2000\n")
    assert condition_text(accuracy, 2).startswith("n=2000\n") and "\np_adj<0.001\n" in condition_text(accuracy, 2)
    violins = [c for c in accuracy.collections if isinstance(c, PolyCollection)]
    strips = [c for c in accuracy.collections if isinstance(c, PathCollection)]
    assert len(violins) == 2  # the shape of each distribution
    assert [len(s.get_offsets()) for s in strips] == [2000, 2000]  # every replicate drawn ...
    assert all(s.get_alpha() <= 0.05 for s in strips)  # ... faintly, so 2,000 points read as a density
    target = plot_run(result, tmp_path / "many.png")
    assert target.read_bytes()[:8] == PNG_MAGIC


def test_constant_metric_and_missing_baseline_do_not_break_the_figure() -> None:
    """Constant values have no violin and Welch says 'not computable' (a dash), not an exception."""

    @pipeline_step()
    def constant(data: float, ctx: Any, *, delta: float = 0.0) -> tuple[float, dict[str, float]]:
        return data, {"flat": 1.0 + delta * 0}

    result = (
        Experiment.builder("flat")
        .datasource(noise())
        .add_step(constant())
        .plugins([SeedPlugin(seed=13)])
        .treatments(THREE[:1])
        .replicates(5)
        .build()
    ).run()
    (axes,) = build_figure(result).axes
    assert condition_text(axes, 2) == "n=5\n1\u00b10\np_adj=\u2014\ng=\u2014"


def test_the_footer_fits_a_one_panel_figure() -> None:
    """The legend line under a narrow (one-metric) figure wraps instead of running off both edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = build_figure(_one_metric_run())
    footer = figure._supxlabel
    assert "\n" in footer.get_text() and "Hedges' g" in footer.get_text()
    renderer = FigureCanvasAgg(figure).get_renderer()
    assert footer.get_window_extent(renderer).width <= figure.get_size_inches()[0] * figure.dpi


def _one_metric_run() -> Any:
    @pipeline_step()
    def one(data: float, ctx: Any, *, delta: float = 0.0) -> tuple[float, dict[str, float]]:
        return data, {"accuracy": data + delta}

    return (
        Experiment.builder("narrow")
        .datasource(noise())
        .add_step(one())
        .plugins([SeedPlugin(seed=13)])
        .treatments(THREE[:1])
        .replicates(5)
        .build()
    ).run()


@pipeline_step()
def fragile(data: float, ctx: Any, *, delta: float = 0.0) -> tuple[float, dict[str, float]]:
    if delta > 50:
        raise ValueError("deliberate failure")
    return data, {"accuracy": data + delta}


def test_a_treatment_whose_replicates_all_failed_says_so() -> None:
    broken = treatment("broken", {"delta": 99.0})
    result = (
        Experiment.builder("fragile")
        .datasource(noise())
        .add_step(fragile())
        .plugins([SeedPlugin(seed=13)])
        .treatments([THREE[1], broken])
        .replicates(4)
        .build()
    ).run()
    (axes,) = build_figure(result).axes
    assert [t.get_text() for t in axes.get_xticklabels()] == ["baseline", "big", "broken"]
    assert "no values" in texts(axes)
    assert condition_text(axes, 3) == "n=0\np_adj=\u2014\ng=\u2014"
    assert "\np_adj" in condition_text(axes, 2)  # Holm over the one computable comparison


# ---------------------------------------------------------------- optimize runs


DELTAS = [-2.0, -1.0, 0.0, 0.5, 1.0]


def optimize_run(root: Path | None = None, grid: dict[str, list[Any]] | None = None) -> Any:
    exp = experiment("search", 4, plugins=[ArtifactPlugin(root_dir=str(root))] if root else [])
    grid = grid or {"delta": DELTAS}
    optimizer = GridSearchOptimizer(grid, Objective(metric="accuracy", direction="maximize"))
    trials = math.prod(len(v) for v in grid.values())
    exp.optimize(optimizer, num_trials=trials, replicates_per_trial=6)
    return exp.last_optimization


def test_optimize_run_plots_the_objective_against_the_parameter_values() -> None:
    result = optimize_run()
    figure = build_figure(result)
    (axes,) = figure.axes  # the objective only, one panel for the one parameter
    assert axes.get_xlabel() == "delta"
    assert axes.get_ylabel() == "accuracy (mean \u00b1 95% CI)"
    assert list(axes.get_xticks()) == DELTAS
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert labels == ["\u22122", "\u22121", "0", "0.5", "1"]
    assert not any(label.startswith("grid_") for label in labels)
    assert "optimize: accuracy (maximize)" in figure.get_suptitle()
    per_condition = dict(result.metrics.conditions())
    expected = [
        v for i, d in enumerate(DELTAS) for v in (d, *t_interval(per_condition[f"grid_{i}"].metrics["accuracy"]))
    ]
    assert intervals(axes) == pytest.approx(expected, rel=1e-9)
    assert any(t.startswith("n=6 replicates per candidate") for t in texts(axes))
    best = max(DELTAS, key=lambda d: sum(per_condition[f"grid_{DELTAS.index(d)}"].metrics["accuracy"]))
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert f"best: grid_{DELTAS.index(best)} (delta={best:g})".replace("-", "\u2212") in legend


def test_optimize_over_two_parameters_one_numeric_one_categorical() -> None:
    result = optimize_run(grid={"delta": [0.0, 1.0], "mode": ["plain", "fancy"]})
    delta_axes, mode_axes = build_figure(result).axes
    assert list(delta_axes.get_xticks()) == [0.0, 1.0]
    assert [t.get_text() for t in mode_axes.get_xticklabels()] == ["plain", "fancy"]
    assert mode_axes.get_xlabel() == "mode"
    legend = [t.get_text() for t in delta_axes.get_legend().get_texts()]
    assert "mode=plain" in legend and "mode=fancy" in legend  # the other parameter as series


def test_old_runs_with_repr_string_parameters_still_get_a_numeric_axis() -> None:
    result = optimize_run()
    result.provenance["treatments"] = {f"grid_{i}": {"delta": repr(d)} for i, d in enumerate(DELTAS)}
    for key in ("optimization", "versions"):  # an old run: untyped parameters, no objective recorded
        result.provenance.pop(key, None)
    figure = build_figure(result)
    assert [a.get_xlabel() for a in figure.axes] == ["delta", "delta"]  # no objective known: each metric
    assert [a.get_title() for a in figure.axes] == ["accuracy vs delta", "loss vs delta"]
    assert list(figure.axes[0].get_xticks()) == DELTAS


def test_a_baseline_with_values_is_drawn_as_a_reference_line() -> None:
    result = optimize_run()
    result.metrics.baseline.metrics["accuracy"] = [0.1, 0.3, 0.2, 0.4]
    result.metrics.baseline.metrics["loss"] = [1.0, 1.0, 1.0, 1.0]
    (axes,) = build_figure(result).axes
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert "baseline mean (n=4)" in legend and "baseline 95% CI" in legend
    (line,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert list(line.get_ydata()) == pytest.approx([0.25, 0.25])
    assert list(axes.get_xticks()) == DELTAS  # the baseline is a line, not a candidate


def test_parse_value_reads_typed_and_repr_parameters() -> None:
    assert parse_value("-2.0") == -2.0 and parse_value(3) == 3
    assert parse_value("'adam'") == "adam" and parse_value("adam") == "adam"
    assert parse_value({"repr": "<Thing>", "type": "m.Thing"}) == "<Thing>"
    assert parse_value("-2.0", typed=True) == "-2.0"  # a typed run: the string the user gave


def test_string_parameters_that_look_like_numbers_stay_categories_in_a_typed_run() -> None:
    (mode_axes,) = build_figure(optimize_run(grid={"mode": ["1", "2"]})).axes
    assert [t.get_text() for t in mode_axes.get_xticklabels()] == ["1", "2"]
    assert list(mode_axes.get_xticks()) == [0, 1]  # categorical positions, not the numbers 1 and 2


def test_cli_show_plot_of_an_optimize_run_writes_the_png(tmp_path: Path) -> None:
    from PIL import Image

    optimize_run(root=tmp_path / "data")
    target = tmp_path / "search.png"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CRYSTALLIZE_DATA_URI")}
    done = subprocess.run(
        [sys.executable, "-m", "crystallize", "show", str(tmp_path / "data/search/v0"), "--plot", str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"plot written to {target}" in done.stderr
    assert target.read_bytes()[:8] == PNG_MAGIC
    with Image.open(target) as image:
        assert image.text["Title"] == "search v0"
        assert image.text["Description"] == "conditions: " + ", ".join(f"grid_{i}" for i in range(5))
