"""``Result``: metrics per condition in replicate order, the long table, errors, provenance, hypotheses."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crystallize import (
    Experiment,
    ExperimentMetrics,
    HypothesisResult,
    ParallelExecution,
    Pipeline,
    Result,
    SeedPlugin,
    SerialExecution,
    TreatmentMetrics,
    data_source,
    hypothesis,
    pipeline_step,
    treatment,
    verifier,
)
from crystallize.engine.plan import ErrorRecord
from crystallize.seeding import replicate_seed

REPLICATES = 4
ROOT_SEED = 1234


@data_source
def replicate_index(ctx: Any, replicate: int) -> int:
    return replicate


@pipeline_step
def slow_first(data: int, ctx: Any) -> int:
    """Early replicates finish last, so completion order is the reverse of replicate order."""
    time.sleep(0.02 * (REPLICATES - data))
    return data


@pipeline_step
def score(data: int, ctx: Any, delta: int = 0, fail_on: int = -1) -> int:
    if data == fail_on:
        raise ValueError(f"replicate {data} refused")
    ctx.metrics.add("score", 10 * data + delta)
    ctx.metrics.add("twice", data)
    ctx.metrics.add("twice", data + 0.5)
    return data


@verifier
def mean_difference(baseline: dict[str, list[float]], treatment: dict[str, list[float]]) -> dict[str, Any]:
    (metric,) = baseline
    b, t = baseline[metric], treatment[metric]
    if sum(t) / len(t) > 1000:
        raise ZeroDivisionError("treatment too large to compare")
    diff = sum(t) / len(t) - sum(b) / len(b)
    return {"p_value": 1.0 / (1.0 + abs(diff)), "diff": diff, "n": len(t)}


@hypothesis(verifier=mean_difference(), metrics="score")
def score_shift(result: dict[str, Any]) -> float:
    return result["p_value"]


def build(execution: Any = None, *, treatments: list[Any] | None = None, **kwargs: Any) -> Experiment:
    return Experiment(
        replicate_index(),
        Pipeline([slow_first(), score()]),
        plugins=[SeedPlugin(seed=ROOT_SEED), execution or SerialExecution(progress=False)],
        name="results_test",
        replicates=REPLICATES,
        treatments=treatments
        if treatments is not None
        else [treatment("plus_one", {"delta": 1}), treatment("plus_five", {"delta": 5})],
        **kwargs,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """One run on 4 threads (replicates finish out of order), with a failing treatment."""
    import os

    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("results_run"))
    try:
        exp = build(
            ParallelExecution(max_workers=4, executor_type="thread", batch_size=1, progress=False),
            treatments=[
                treatment("plus_one", {"delta": 1}),
                treatment("plus_five", {"delta": 5}),
                treatment("broken", {"delta": 2, "fail_on": 2}),
                treatment("huge", {"delta": 5000}),
            ],
            hypotheses=[score_shift],
        )
        return exp.run()
    finally:
        os.chdir(previous)


# ------------------------------------------------------------------ metrics per condition


def test_metrics_are_ordered_by_replicate(result: Result) -> None:
    assert result.metrics.baseline.metrics["score"] == [0, 10, 20, 30]
    assert result.metrics.treatments["plus_one"].metrics["score"] == [1, 11, 21, 31]
    assert result.metrics.treatments["plus_five"].metrics["score"] == [5, 15, 25, 35]
    assert result.metrics.baseline.metrics["twice"] == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]
    assert set(result.metrics.treatments) == {"plus_one", "plus_five", "broken", "huge"}


def test_replicates_run_parallel_to_values(result: Result) -> None:
    for _, tm in result.metrics.conditions():
        assert set(tm.replicates) == set(tm.metrics)
        for name, values in tm.metrics.items():
            assert len(tm.replicates[name]) == len(values)
            assert tm.replicates[name] == sorted(tm.replicates[name])
    baseline = result.metrics.baseline
    assert baseline.replicates["score"] == [0, 1, 2, 3]
    assert baseline.replicates["twice"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert baseline.by_replicate("twice") == {r: [r, r + 0.5] for r in range(4)}
    # the failed replicate of 'broken' is absent, and each value sits next to its replicate
    broken = result.metrics.treatments["broken"]
    assert broken.replicates["score"] == [0, 1, 3]
    assert broken.metrics["score"] == [10 * r + 2 for r in broken.replicates["score"]]


def test_conditions_yield_baseline_first(result: Result) -> None:
    names = [name for name, _ in result.metrics.conditions()]
    assert names == ["baseline", "plus_one", "plus_five", "broken", "huge"]


# ------------------------------------------------------------------ long form


def test_to_arrow_long_form(result: Result) -> None:
    assert result.to_arrow().column_names[:4] == ["condition", "replicate", "metric", "value"]  # then param.*
    table = result.to_arrow(params=False)
    assert table.column_names == ["condition", "replicate", "metric", "value"]
    assert table.schema.field("condition").type == pa.string()
    assert table.schema.field("replicate").type == pa.int64()
    assert table.schema.field("metric").type == pa.string()
    assert table.schema.field("value").type == pa.float64()
    rows = table.to_pylist()
    expected_rows = sum(len(v) for _, tm in result.metrics.conditions() for v in tm.metrics.values())
    assert len(rows) == expected_rows == 5 * 4 * 3 - 3
    score_rows = [(r["condition"], r["replicate"], r["value"]) for r in rows if r["metric"] == "score"]
    assert score_rows[:4] == [("baseline", r, 10.0 * r) for r in range(4)]
    assert ("broken", 2, 22.0) not in score_rows
    assert [r for r in rows if r["condition"] == "plus_five" and r["metric"] == "twice"] == [
        {"condition": "plus_five", "replicate": r, "metric": "twice", "value": v}
        for r in range(4)
        for v in (r, r + 0.5)
    ]


def test_to_pandas_matches_to_arrow(result: Result) -> None:
    df = result.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns)[:4] == ["condition", "replicate", "metric", "value"]
    assert all(column.startswith("param.") for column in list(df.columns)[4:])
    assert df["replicate"].dtype == np.int64
    assert df["value"].dtype == np.float64
    pd.testing.assert_frame_equal(df, result.to_arrow().to_pandas(), check_dtype=False)  # param.*: nullable
    pivot = df[df.metric == "score"].pivot(index="replicate", columns="condition", values="value")
    assert pivot["baseline"].tolist() == [0.0, 10.0, 20.0, 30.0]
    assert math.isnan(pivot.loc[2, "broken"])


def _result_of(values: dict[str, list[Any]]) -> Result:
    tm = TreatmentMetrics(metrics=values, replicates={k: list(range(len(v))) for k, v in values.items()})
    return Result(ExperimentMetrics(baseline=tm, treatments={}, hypotheses=[]))


def test_non_numeric_values_become_json_strings() -> None:
    values = {
        "vec": [[1, 2], [3.5]],
        "label": ["a", "b"],
        "n": [1, np.float32(2.5)],
        "nested": [{"k": [np.int64(1)]}, None],
        "array": [np.array([1, 2]), np.array([[0.5]])],
    }
    table = _result_of(values).to_arrow()
    assert table.schema.field("value").type == pa.string()
    assert table.schema.field("replicate").type == pa.int64()
    decoded = {}
    for row in table.to_pylist():
        decoded.setdefault(row["metric"], []).append(json.loads(row["value"]))
    assert decoded == {
        "vec": [[1, 2], [3.5]],
        "label": ["a", "b"],
        "n": [1, 2.5],
        "nested": [{"k": [1]}, None],
        "array": [[1, 2], [[0.5]]],
    }


def test_numeric_values_stay_float64() -> None:
    values = {"i": [1, 2], "f": [0.25, float("nan")], "b": [True, False], "np": [np.int64(3), np.float64(4.5)]}
    table = _result_of(values).to_arrow()
    assert table.schema.field("value").type == pa.float64()
    got = {(r["metric"], r["replicate"]): r["value"] for r in table.to_pylist()}
    assert got[("i", 1)] == 2.0 and got[("b", 0)] == 1.0 and got[("np", 1)] == 4.5
    assert math.isnan(got[("f", 1)])


def test_empty_result_has_typed_columns() -> None:
    table = _result_of({}).to_arrow()
    assert table.num_rows == 0
    assert [f.type for f in table.schema] == [pa.string(), pa.int64(), pa.string(), pa.float64()]
    assert len(_result_of({}).to_pandas()) == 0


# ------------------------------------------------------------------ errors


def test_errors_record_where_and_why(result: Result) -> None:
    assert set(result.replicate_errors) == {"broken"}
    assert set(result.replicate_errors["broken"]) == {2}
    record = result.replicate_errors["broken"][2]
    assert isinstance(record, ErrorRecord)
    assert record.stage == record.step == "score"
    assert record.exception_type == "ValueError"
    assert record.message == "replicate 2 refused"
    assert "ValueError: replicate 2 refused" in record.traceback
    assert (record.condition, record.replicate) == ("broken", 2)
    assert "broken" in str(record) and "score" in str(record)
    assert result.failed == 1
    assert "failed=1" in repr(result)


# ------------------------------------------------------------------ provenance


def test_provenance_records_the_run(result: Result) -> None:
    prov = result.provenance
    assert prov["root_seed"] == ROOT_SEED
    assert prov["pipeline_signature"] == "slow_first -> score"
    assert prov["replicates"] == REPLICATES
    assert prov["executor"]["executor"] == "thread"
    assert prov["executor"]["parallelism"] == 4
    assert prov["conditions"] == ["baseline", "plus_one", "plus_five", "broken", "huge"]

    expected_seeds = [replicate_seed(ROOT_SEED, r) for r in range(REPLICATES)]
    assert set(prov["seeds"]) == set(prov["conditions"])
    for condition, seeds in prov["seeds"].items():
        assert seeds == expected_seeds, condition  # common random numbers, failed replicates included
        assert prov["seeds_by_replicate"][condition] == dict(enumerate(expected_seeds))
    assert len(set(expected_seeds)) == REPLICATES

    for condition in prov["conditions"]:
        steps = prov["steps"][condition]
        assert list(steps) == ["slow_first", "score"]
        assert steps["slow_first"]["runs"] == REPLICATES
        assert steps["slow_first"]["cache_hits"] == 0
        assert steps["slow_first"]["seconds"] > 0
    # the failed step still counts as a run of the steps before it, not of itself
    assert prov["steps"]["broken"]["score"]["runs"] == REPLICATES - 1
    assert prov["replicates_failed"]["broken"] == 1
    assert prov["replicates_completed"] == {"baseline": 4, "plus_one": 4, "plus_five": 4, "broken": 3, "huge": 4}


def test_provenance_is_json_serialisable(result: Result) -> None:
    json.dumps(result.provenance, default=str)


# ------------------------------------------------------------------ hypotheses


def test_get_hypothesis(result: Result) -> None:
    found = result.get_hypothesis("score_shift")
    assert isinstance(found, HypothesisResult)
    assert found.name == "score_shift"
    assert result.get_hypothesis("no_such_hypothesis") is None


def test_verifier_error_is_recorded_and_others_still_verified(result: Result) -> None:
    hyp = result.get_hypothesis("score_shift")
    assert set(hyp.errors) == {"huge"}
    assert "ZeroDivisionError" in hyp.errors["huge"]
    assert "treatment too large" in hyp.errors["huge"]
    assert set(hyp.results) == {"plus_one", "plus_five", "broken"}
    assert hyp.get_for_treatment("huge") is None
    assert hyp.results["plus_one"]["diff"] == pytest.approx(1.0)
    assert hyp.results["plus_five"]["diff"] == pytest.approx(5.0)
    # broken's replicate 2 is dropped on both sides of the comparison
    assert hyp.results["broken"]["n"] == 3
    assert hyp.results["broken"]["diff"] == pytest.approx(2.0)
    assert hyp.dropped_pairs == {"plus_one": 0, "plus_five": 0, "broken": 1, "huge": 0}
    assert hyp.ranking["best"] == "plus_five"
    assert [name for name, _ in hyp.ranking["ranked"]] == ["plus_five", "broken", "plus_one"]


def test_experiment_metrics_to_df(result: Result) -> None:
    df = result.metrics.to_df()
    assert {"condition", "hypothesis", "p_value", "diff", "n"} <= set(df.columns)
    assert sorted(df["condition"]) == ["broken", "plus_five", "plus_one"]
    assert set(df["hypothesis"]) == {"score_shift"}
    row = df.set_index("condition").loc["plus_five"]
    assert row["diff"] == pytest.approx(5.0)


def test_to_df_wraps_non_mapping_results() -> None:
    hyp = HypothesisResult(name="h", results={"t": 0.5, "u": [1, 2]}, ranking={})
    metrics = ExperimentMetrics(baseline=TreatmentMetrics(metrics={}), treatments={}, hypotheses=[hyp])
    df = metrics.to_df()
    assert df.to_dict("records") == [
        {"condition": "t", "hypothesis": "h", "result": 0.5},
        {"condition": "u", "hypothesis": "h", "result": [1, 2]},
    ]
    assert ExperimentMetrics(TreatmentMetrics(metrics={}), {}, []).to_df().empty


def test_serial_run_gives_the_same_metrics(result: Result) -> None:
    """Completion order does not leak into the result."""
    serial = build(
        treatments=[
            treatment("plus_one", {"delta": 1}),
            treatment("plus_five", {"delta": 5}),
            treatment("broken", {"delta": 2, "fail_on": 2}),
            treatment("huge", {"delta": 5000}),
        ],
        hypotheses=[score_shift],
    ).run()
    for (name, tm), (other_name, other) in zip(result.metrics.conditions(), serial.metrics.conditions(), strict=True):
        assert name == other_name
        assert tm.metrics == other.metrics
        assert tm.replicates == other.replicates
    assert serial.to_arrow().equals(result.to_arrow())
    assert serial.get_hypothesis("score_shift").results == result.get_hypothesis("score_shift").results
