"""Hypothesis: metric specs, missing metrics, and ranking treatments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from crystallize import CrystallizeError, Hypothesis, MissingMetricError
from crystallize.hypothesis import rank_by_p_value

BASELINE = {"acc": [0.5, 0.6], "loss": [1.0, 0.9], "time": [3, 4]}
TREATED = {"acc": [0.7, 0.8], "loss": [0.5, 0.4], "time": [5, 6]}


class Spy:
    """A verifier that records every call and reports which metrics it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def __call__(self, baseline: Mapping[str, Sequence[Any]], treatment: Mapping[str, Sequence[Any]]) -> dict:
        self.calls.append((dict(baseline), dict(treatment)))
        return {"metrics": sorted(baseline), "p_value": 0.5}


def test_metrics_as_str() -> None:
    spy = Spy()
    hyp = Hypothesis(spy, metrics="acc")
    out = hyp.verify(BASELINE, TREATED)
    assert out == {"metrics": ["acc"], "p_value": 0.5}
    assert spy.calls == [({"acc": [0.5, 0.6]}, {"acc": [0.7, 0.8]})]


def test_metrics_as_list_one_call_sees_all() -> None:
    spy = Spy()
    hyp = Hypothesis(spy, metrics=["acc", "loss"])
    out = hyp.verify(BASELINE, TREATED)
    assert isinstance(out, dict)
    assert out["metrics"] == ["acc", "loss"]
    assert len(spy.calls) == 1
    baseline, treatment = spy.calls[0]
    assert baseline == {"acc": [0.5, 0.6], "loss": [1.0, 0.9]}
    assert treatment == {"acc": [0.7, 0.8], "loss": [0.5, 0.4]}


def test_metrics_as_tuple_behaves_like_list() -> None:
    spy = Spy()
    out = Hypothesis(spy, metrics=("acc", "time")).verify(BASELINE, TREATED)
    assert out["metrics"] == ["acc", "time"]
    assert len(spy.calls) == 1


def test_metrics_as_list_of_lists_gives_one_result_per_group() -> None:
    spy = Spy()
    hyp = Hypothesis(spy, metrics=[["acc"], ["loss", "time"]])
    out = hyp.verify(BASELINE, TREATED)
    assert isinstance(out, list)
    assert [r["metrics"] for r in out] == [["acc"], ["loss", "time"]]
    assert len(spy.calls) == 2
    assert spy.calls[1][0] == {"loss": [1.0, 0.9], "time": [3, 4]}
    assert spy.calls[1][1] == {"loss": [0.5, 0.4], "time": [5, 6]}


def test_single_group_list_of_lists_is_not_wrapped() -> None:
    out = Hypothesis(Spy(), metrics=[["acc", "loss"]]).verify(BASELINE, TREATED)
    assert out == {"metrics": ["acc", "loss"], "p_value": 0.5}


def test_no_metrics_means_every_baseline_metric() -> None:
    spy = Spy()
    out = Hypothesis(spy).verify(BASELINE, TREATED)
    assert out["metrics"] == ["acc", "loss", "time"]


def test_metric_names() -> None:
    assert Hypothesis(Spy(), metrics=[["b", "a"], ["c"]]).metric_names == ["a", "b", "c"]
    assert Hypothesis(Spy(), metrics="x").metric_names == ["x"]


def test_missing_metric_in_treatment_raises() -> None:
    spy = Spy()
    hyp = Hypothesis(spy, metrics=["acc", "f1"])
    with pytest.raises(MissingMetricError) as info:
        hyp.verify({**BASELINE, "f1": [0.1]}, TREATED, treatment_name="boost")
    assert info.value.metric == "f1"
    assert info.value.condition == "boost"
    assert "f1" in str(info.value) and "boost" in str(info.value)
    assert isinstance(info.value, CrystallizeError)
    assert spy.calls == []  # the verifier is not called with partial data


def test_missing_metric_in_baseline_raises() -> None:
    hyp = Hypothesis(Spy(), metrics="f1")
    with pytest.raises(MissingMetricError, match="f1") as info:
        hyp.verify(BASELINE, {**TREATED, "f1": [0.2]})
    assert info.value.condition == "baseline"


def test_missing_metric_in_a_later_group_raises() -> None:
    hyp = Hypothesis(Spy(), metrics=[["acc"], ["absent"]])
    with pytest.raises(MissingMetricError, match="absent"):
        hyp.verify(BASELINE, TREATED)


# --- ranking ----------------------------------------------------------------------------


def test_rank_treatments_orders_by_ranker_ascending() -> None:
    hyp = Hypothesis(Spy(), metrics="acc", ranker=lambda r: r["score"])
    ranking = hyp.rank_treatments({"mid": {"score": 5.0}, "low": {"score": -1.0}, "high": {"score": 10.0}})
    assert ranking["best"] == "low"
    assert ranking["ranked"] == [("low", -1.0), ("mid", 5.0), ("high", 10.0)]


def test_rank_treatments_empty() -> None:
    ranking = Hypothesis(Spy(), metrics="acc").rank_treatments({})
    assert ranking == {"best": None, "ranked": []}


def test_default_ranker_uses_p_value() -> None:
    hyp = Hypothesis(Spy(), metrics="acc")
    assert hyp.ranker is rank_by_p_value
    ranking = hyp.rank_treatments(
        {"a": {"p_value": 0.2, "effect": 9}, "b": {"p_value": 0.01, "effect": 0}, "c": {"p_value": 0.5}}
    )
    assert ranking["best"] == "b"
    assert [name for name, _ in ranking["ranked"]] == ["b", "a", "c"]
    assert ranking["ranked"][0][1] == pytest.approx(0.01)


def test_default_ranker_without_p_value_ranks_last() -> None:
    assert rank_by_p_value({}) == 1.0
    ranking = Hypothesis(Spy()).rank_treatments({"none": {"effect": 1}, "some": {"p_value": 0.9}})
    assert ranking["best"] == "some"


def test_default_ranker_handles_grouped_results() -> None:
    hyp = Hypothesis(Spy(), metrics=[["acc"], ["loss"]])
    results = {
        "a": [{"p_value": 0.3}, {"p_value": 0.2}],
        "b": [{"p_value": 0.9}, {"p_value": 0.05}],
    }
    ranking = hyp.rank_treatments(results)
    assert ranking["best"] == "b"
    assert ranking["ranked"] == [("b", 0.05), ("a", 0.2)]


def test_name_defaults() -> None:
    def my_ranker(result: Mapping[str, Any]) -> float:
        return 0.0

    assert Hypothesis(Spy(), ranker=my_ranker).name == "my_ranker"
    assert Hypothesis(Spy(), ranker=my_ranker, name="explicit").name == "explicit"
    assert Hypothesis(Spy()).name == "hypothesis"
    assert "acc" in repr(Hypothesis(Spy(), metrics="acc"))


def test_end_to_end_verify_then_rank() -> None:
    def verifier(baseline: Mapping[str, Sequence[float]], treatment: Mapping[str, Sequence[float]]) -> dict:
        gain = sum(treatment["acc"]) / len(treatment["acc"]) - sum(baseline["acc"]) / len(baseline["acc"])
        return {"gain": gain}

    hyp = Hypothesis(verifier, metrics="acc", ranker=lambda r: -r["gain"], name="gain")
    results = {
        name: hyp.verify(BASELINE, {"acc": accs}, treatment_name=name)
        for name, accs in {"small": [0.6, 0.6], "big": [0.9, 0.9]}.items()
    }
    assert hyp.rank_treatments(results)["best"] == "big"


def test_a_nan_score_ranks_after_every_number() -> None:
    """A test that could not be computed (p NaN) never ranks first, wherever it sits in the results."""
    hyp = Hypothesis(verifier=Spy(), metrics="acc")
    nan = float("nan")
    for order in (["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"]):
        results = {name: {"p_value": {"a": nan, "b": 0.04, "c": 0.5}[name]} for name in order}
        ranking = hyp.rank_treatments(results)
        assert ranking["best"] == "b"
        assert [name for name, _ in ranking["ranked"]] == ["b", "c", "a"]
