"""The built-in verifiers, end to end: an experiment with three treatments, config.yaml by name, a stored run."""

from __future__ import annotations

import json
import math
import pickle
import re
import textwrap
import warnings
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import crystallize
from crystallize import (
    Experiment,
    Hypothesis,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    ValidationError,
    data_source,
    load_run,
    mann_whitney_test,
    paired_t_test,
    pipeline_step,
    verifier,
    welch_t_test,
)
from crystallize.stats import tests as pure
from crystallize.stats.adjust import adjust_p_values

DELTAS = {"tiny": 0.1, "mid": 0.6, "big": 2.0}
CONTRACT_KEYS = {
    "test", "metric", "p_value", "significant", "alpha", "confidence", "statistic", "n_baseline",
    "n_treatment", "effect", "effect_size", "difference", "ci_low", "ci_high",
}  # fmt: skip


@data_source
def replicate_number(ctx: Any) -> int:
    return ctx["replicate"]


@pipeline_step
def measure(data: int, ctx: Any, delta: float = 0.0) -> int:
    noise, spread = float(ctx.rng.normal()), float(ctx.rng.normal())
    # every condition of a replicate draws the same numbers (common random numbers): the effect
    # varies by replicate so the paired differences are not constant
    ctx.metrics.add("score", noise + delta * (1.0 + 0.5 * spread))
    ctx.metrics.add("other", float(ctx.rng.normal()))  # the same in every condition
    return data


@verifier
def own_keys(baseline: Any, treatment: Any) -> dict:
    """A user verifier that already reports an adjusted p-value of its own."""
    p = pure.welch_t(baseline["score"], treatment["score"])["p_value"]
    return {"p_value": p, "p_value_adjusted": "user's own", "significant_adjusted": "user's too"}


def reads_adjusted(result: Any) -> float:
    return result.get("p_value_adjusted", 42.0)


def three_treatment_experiment(*hypotheses: Hypothesis, replicates: int = 12) -> Experiment:
    return Experiment(
        replicate_number(),
        Pipeline([measure()]),
        plugins=[SerialExecution(progress=False), SeedPlugin(seed=13)],
        name="stats3",
        replicates=replicates,
        treatments=[Treatment(name, {"delta": delta}) for name, delta in DELTAS.items()],
        hypotheses=list(hypotheses),
    )


def test_three_treatments_end_to_end_with_adjustment_and_a_stored_run() -> None:
    experiment = three_treatment_experiment(
        Hypothesis(verifier=welch_t_test(alpha=0.05), metrics="score", name="welch"),
        Hypothesis(verifier=paired_t_test(), metrics=[["score"], ["other"]], name="paired", adjust="bh"),
        Hypothesis(verifier=own_keys(), metrics="score", name="own"),
        Hypothesis(verifier=welch_t_test(), metrics="score", name="by_adjusted", ranker=reads_adjusted),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = experiment.run()

    welch = result.get_hypothesis("welch")
    assert welch is not None and not welch.errors
    raw = [welch.results[name]["p_value"] for name in DELTAS]
    assert [welch.results[name]["p_value_adjusted"] for name in DELTAS] == adjust_p_values(raw, "holm")
    for name in DELTAS:
        r = welch.results[name]
        assert CONTRACT_KEYS <= set(r) and r["metric"] == "score" and r["test"] == "welch_t"
        assert r["n_baseline"] == r["n_treatment"] == 12
        assert r["p_value_adjusted"] >= r["p_value"] and r["adjustment"] == "holm"
        assert r["significant_adjusted"] is (r["p_value_adjusted"] < 0.05)
    assert welch.results["big"]["significant_adjusted"] is True
    # the ranking is the raw p-values' order, as without adjustment
    assert [name for name, _ in welch.ranking["ranked"]] == sorted(DELTAS, key=lambda n: welch.results[n]["p_value"])
    assert welch.ranking["ranked"][0] == ("big", welch.results["big"]["p_value"])

    paired = result.get_hypothesis("paired")
    assert paired is not None and all(isinstance(paired.results[n], list) for n in DELTAS)
    for position, metric in enumerate(["score", "other"]):
        raw = [paired.results[n][position]["p_value"] for n in DELTAS]
        assert [paired.results[n][position]["metric"] for n in DELTAS] == [metric] * 3
        assert [paired.results[n][position]["p_value_adjusted"] for n in DELTAS] == adjust_p_values(raw, "bh")

    own = result.get_hypothesis("own")
    assert own is not None
    assert {own.results[n]["p_value_adjusted"] for n in DELTAS} == {"user's own"}  # never overwritten
    assert {own.results[n]["significant_adjusted"] for n in DELTAS} == {"user's too"}
    assert {own.results[n]["adjustment"] for n in DELTAS} == {"holm"}  # only the missing key is added
    by_adjusted = result.get_hypothesis("by_adjusted")
    assert [score for _, score in by_adjusted.ranking["ranked"]] == [42.0] * 3  # ranked before adjustment
    assert "p_value_adjusted" in by_adjusted.results["big"]

    other = paired.results["big"][1]  # identical in every condition: all paired differences are 0
    assert other["note"].startswith("constant data") and math.isnan(other["p_value_adjusted"])

    stored = load_run("data/stats3/v0")
    for name in ("welch", "paired", "own", "by_adjusted"):
        kept, made = stored.get_hypothesis(name).results, result.get_hypothesis(name).results
        assert json.dumps(kept, sort_keys=True) == json.dumps(made, sort_keys=True)  # NaN-aware equality


def test_a_degenerate_comparison_is_stored_with_its_note() -> None:
    @pipeline_step
    def constant(data: int, ctx: Any, delta: float = 0.0) -> int:
        ctx.metrics.add("score", 1.0 + delta)
        return data

    experiment = Experiment(
        replicate_number(),
        Pipeline([constant()]),
        plugins=[SerialExecution(progress=False)],
        name="flat",
        replicates=4,
        treatments=[Treatment("up", {"delta": 1.0}), Treatment("same", {"delta": 0.0})],
        hypotheses=[Hypothesis(verifier=welch_t_test(), metrics="score", name="welch")],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment.run()
    stored = load_run("data/flat/v0").get_hypothesis("welch")
    same = stored.results["same"]  # no difference and no spread: nothing to test
    assert same["note"].startswith("constant data") and math.isnan(same["p_value"])
    assert math.isnan(same["p_value_adjusted"]) and same["significant_adjusted"] is False
    up = stored.results["up"]  # a difference without spread: certain for these replicates, said so
    assert up["note"].startswith("deterministic difference") and up["p_value"] == 0.0
    assert up["significant"] is True and up["significant_adjusted"] is True
    assert (up["ci_low"], up["difference"], up["ci_high"]) == (1.0, 1.0, 1.0)
    assert stored.ranking["best"] == "up"


def test_misuse_is_reported_per_treatment_naming_the_metric() -> None:
    @pipeline_step
    def twice_when_treated(data: int, ctx: Any, delta: float = 0.0) -> int:
        ctx.metrics.add("score", float(ctx.rng.normal()))
        if delta:
            ctx.metrics.add("score", float(ctx.rng.normal()))  # a second value per replicate breaks pairing
        return data

    experiment = Experiment(
        replicate_number(),
        Pipeline([twice_when_treated()]),
        plugins=[SerialExecution(progress=False)],
        name="misuse",
        replicates=3,
        treatments=[Treatment("double", {"delta": 1.0})],
        hypotheses=[
            Hypothesis(verifier=paired_t_test(), metrics="score", name="paired"),
            Hypothesis(verifier=mann_whitney_test(), metrics=["score", "score2"], name="two_metrics"),
        ],
    )
    result = experiment.run()
    paired = result.get_hypothesis("paired")
    assert (
        "metric 'score'" in paired.errors["double"]
        and "baseline has 3 values and the treatment 6" in (paired.errors["double"])
    )
    with pytest.raises(ValidationError, match=r"pass metrics=\[\['a'\], \['b'\]\]"):
        mann_whitney_test()({"a": [1.0, 2.0], "b": [1.0, 2.0]}, {"a": [1.0, 2.0], "b": [1.0, 2.0]})


def test_verifiers_are_exported_picklable_and_bind_parameters() -> None:
    names = ["welch_t_test", "paired_t_test", "mann_whitney_test", "wilcoxon_test", "permutation_test", "bootstrap_ci"]
    assert set(names) <= set(crystallize.__all__)
    sample = {"s": [1.0, 2.0, 3.5, 2.2]}, {"s": [2.0, 3.1, 4.4, 3.0]}
    for name in names:
        bound = getattr(crystallize, name)(alpha=0.1)
        for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
            out = loads(dumps(bound))(*sample)
            assert out["alpha"] == 0.1 and out["metric"] == "s"
        assert name in repr(bound)
    with pytest.raises(ValidationError, match="Unknown parameters: alpah"):
        welch_t_test(alpah=0.1)


CONFIG = """
name: by_name
replicates: 8
datasource: replicate_number
steps: [measure]
treatments:
  tiny: {{delta: 0.1}}
  big: {{delta: 2.0}}
hypotheses:
  - name: welch
    verifier: {{name: welch_t_test, params: {{alpha: 0.01}}}}
    metrics: score
    adjust: bh
  - name: ranks
    verifier: {rank_test}
    metrics: score
"""

STEPS = """
from crystallize import data_source, pipeline_step

@data_source
def replicate_number(ctx):
    return ctx["replicate"]

@pipeline_step
def measure(data, ctx, delta: float = 0.0):
    ctx.metrics.add("score", float(ctx.rng.normal()) + delta)
    return data
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def test_config_yaml_names_the_built_in_verifiers(tmp_path: Path) -> None:
    folder = write(tmp_path / "exp", {"config.yaml": CONFIG.format(rank_test="wilcoxon_test"), "steps.py": STEPS})
    experiment = Experiment.from_yaml(folder)
    assert [h.adjust for h in experiment.hypotheses] == ["bh", "holm"]
    result = experiment.run()
    welch = result.get_hypothesis("welch").results["big"]
    assert welch["test"] == "welch_t" and welch["alpha"] == 0.01 and welch["adjustment"] == "bh"
    assert result.get_hypothesis("ranks").results["tiny"]["test"] == "wilcoxon"


def test_a_folders_own_function_of_the_same_name_wins(tmp_path: Path) -> None:
    own = STEPS + textwrap.dedent(
        """
        from crystallize import verifier

        @verifier
        def welch_t_test(baseline, treatment, alpha: float = 0.05):
            return {"p_value": 0.5, "mine": True, "alpha": alpha}
        """
    )
    folder = write(tmp_path / "exp", {"config.yaml": CONFIG.format(rank_test="welch_t_test"), "steps.py": own})
    result = Experiment.from_yaml(folder).run()
    assert result.get_hypothesis("welch").results["big"] == {
        "p_value": 0.5, "mine": True, "alpha": 0.01,
        "p_value_adjusted": 0.5, "significant_adjusted": False, "adjustment": "bh",
    }  # fmt: skip
    assert result.get_hypothesis("ranks").results["tiny"]["mine"] is True


def test_a_bad_adjust_key_names_its_line(tmp_path: Path) -> None:
    config = CONFIG.format(rank_test="wilcoxon_test").replace("adjust: bh", "adjust: bonferroni")
    folder = write(tmp_path / "exp", {"config.yaml": config, "steps.py": STEPS})
    with pytest.raises(ValidationError, match=r"hypotheses\[0\]\.adjust.*holm, bh, none"):
        Experiment.from_yaml(folder)


def test_the_027_format_finds_the_built_in_verifiers_too(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "old",
        {
            "config.yaml": """
                replicates: 6
                datasource: {n: numbers}
                steps: [measure]
                treatments:
                  shifted: {shift: 40}
                hypotheses:
                  - name: ranks
                    verifier: mann_whitney_test
                    metrics: value
            """,
            "datasources.py": """
                from crystallize import data_source

                @data_source
                def numbers(ctx):
                    return 1
            """,
            "steps.py": """
                from crystallize import pipeline_step

                @pipeline_step()
                def measure(data, ctx, shift: int = 0):
                    ctx.metrics.add("value", data + shift + float(ctx.rng.normal()))
                    return data
            """,
        },
    )
    result = Experiment.from_yaml(folder / "config.yaml").run()
    ranks = result.get_hypothesis("ranks").results["shifted"]
    assert ranks["test"] == "mann_whitney" and ranks["rank_biserial"] == 1.0 and ranks["adjustment"] == "holm"


def test_docs_statistics_md_runs_and_shows_what_it_says() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "statistics.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", text, re.S | re.M)
    namespace: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for block in blocks:
            exec(compile(block, "docs/statistics.md", "exec"), namespace)
    result = namespace["result"]
    paired, welch = result.get_hypothesis("paired").results, result.get_hypothesis("welch").results
    # "The paired test finds the small boost that the Welch test, on the same numbers, cannot tell from noise"
    assert paired["small"]["significant_adjusted"] is True and welch["small"]["significant_adjusted"] is False
    assert paired["small"]["difference"] == pytest.approx(welch["small"]["difference"])


def test_a_misspelled_built_in_name_gets_a_suggestion(tmp_path: Path) -> None:
    config = CONFIG.format(rank_test="wilcoxon_tset")
    folder = write(tmp_path / "exp", {"config.yaml": config, "steps.py": STEPS})
    with pytest.raises(ValidationError, match=r"did you mean 'wilcoxon_test'\?.*built in: bootstrap_ci, "):
        Experiment.from_yaml(folder)
