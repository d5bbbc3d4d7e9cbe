"""``Result`` as crystallize-ml 0.27 code reads it: ``errors`` keyed ``"<condition>_rep_<i>"`` to an
exception, ``artifacts`` as ``{name: {condition: path}}``, ``get_artifact``, ``to_dict``/``to_json``/
``to_parquet`` and ``print_tree``; the richer shapes stay under ``replicate_errors`` and
``artifact_entries``. Real runs, real files."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from crystallize import (
    ArtifactPlugin,
    Experiment,
    ExperimentMetrics,
    ParallelExecution,
    Pipeline,
    PipelineExecutionError,
    Result,
    SerialExecution,
    Treatment,
    TreatmentMetrics,
    data_source,
    hypothesis,
    pipeline_step,
    verifier,
)
from crystallize.engine.plan import ErrorRecord
from crystallize.errors import CrystallizeError, ReplicateError, ValidationError
from crystallize.runs import load_run


class RefusedError(ValueError):
    """A user's own exception class, to see it come back as itself (or by name)."""


@data_source
def numbers(ctx: Any) -> int:
    return 1


@data_source
def flaky_source(ctx: Any) -> int:
    if ctx["replicate"] == 1:
        raise RefusedError("no data for replicate 1")
    return 1


@pipeline_step()
def boom(data: int, ctx: Any) -> int:
    if ctx["condition"] == "t" and ctx["replicate"] == 1:
        raise RefusedError("bad thing in t/1")
    ctx.metrics.add("x", data + ctx["replicate"])
    ctx.metrics.add("label", f"r{ctx['replicate']}")
    ctx.artifacts.add("a.txt", f"{ctx['condition']}:{ctx['replicate']}".encode())
    return data


@pipeline_step()
def tail(data: int, ctx: Any) -> int:
    ctx.metrics.add("y", 2.0)
    return data


@verifier
def difference(baseline: dict[str, list[float]], treatment: dict[str, list[float]]) -> dict[str, Any]:
    return {"p_value": 0.5, "diff": sum(treatment["x"]) - sum(baseline["x"])}


@hypothesis(verifier=difference(), metrics="x")
def x_moves(result: dict[str, Any]) -> float:
    return result["p_value"]


def run(execution: Any = None, *, datasource: Any = None, replicates: int = 3) -> Result:
    exp = Experiment(
        datasource=datasource or numbers(),
        pipeline=Pipeline([boom(), tail()]),
        plugins=[ArtifactPlugin(root_dir="data"), execution or SerialExecution(progress=False)],
        treatments=[Treatment("t", {"k": 1})],
        hypotheses=[x_moves],
        name="compat",
    )
    return exp.run(replicates=replicates)


# ------------------------------------------------------------------ errors


def test_errors_are_keyed_condition_rep_i_and_hold_the_original_in_process() -> None:
    result = run()
    assert list(result.errors) == ["t_rep_1"]
    error = result.errors["t_rep_1"]
    # a step's failure is a PipelineExecutionError, as 0.27 gives it, wrapping the very exception
    assert isinstance(error, ReplicateError) and isinstance(error, PipelineExecutionError)
    assert isinstance(error.original_exception, RefusedError)
    assert str(error.original_exception) == "bad thing in t/1"
    assert error.__cause__ is error.original_exception
    assert "bad thing in t/1" in str(error) and "boom" in str(error)
    assert 'raise RefusedError("bad thing in t/1")' in error.traceback_str
    assert (error.step_name, error.condition, error.replicate) == ("boom", "t", 1)
    assert result.errors is result.errors  # one dict, kept (0.27 code may add to it)
    # the rich shape is still there under its own name
    record = result.replicate_errors["t"][1]
    assert isinstance(record, ErrorRecord) and record.stage == "boom" and record.exception_type == "RefusedError"
    assert result.failed == 1


def test_an_error_from_another_process_is_rebuilt_from_its_record() -> None:
    serial = run()
    result = run(ParallelExecution(executor_type="process", max_workers=2, progress=False))
    assert list(result.errors) == list(serial.errors) == ["t_rep_1"]
    error = result.errors["t_rep_1"]
    assert isinstance(error, ReplicateError) and isinstance(error, CrystallizeError)
    assert error.original_exception is None  # the exception stayed in the worker
    assert (error.exception_type, error.message) == ("RefusedError", "bad thing in t/1")
    assert f"{__name__}.RefusedError" in error.exception_types and "builtins.ValueError" in error.exception_types
    assert 'raise RefusedError("bad thing in t/1")' in error.traceback_str
    assert str(error) == str(serial.errors["t_rep_1"])
    # it pickles (to hand on) as plain fields
    again = pickle.loads(pickle.dumps(error))
    assert (again.exception_type, again.message, again.condition, again.replicate) == (
        "RefusedError",
        error.message,
        "t",
        1,
    )
    assert str(again) == str(error) and again.traceback_str == error.traceback_str


def test_after_load_run_errors_come_from_the_record_and_run_json_keeps_its_format() -> None:
    live = run()
    loaded = load_run("data/compat")
    assert list(loaded.errors) == ["t_rep_1"]
    error = loaded.errors["t_rep_1"]
    assert isinstance(error, ReplicateError) and error.original_exception is None
    assert error.exception_type == "RefusedError" and error.message == "bad thing in t/1"
    assert error.traceback_str == live.replicate_errors["t"][1].traceback
    assert loaded.replicate_errors["t"][1].stage == "boom"
    record = json.loads(Path("data/compat/v0/run.json").read_text())
    stored = record["errors"]["t"]["1"]
    assert stored["stage"] == "boom" and stored["exception_type"] == "RefusedError"
    assert "exception" not in stored  # the live exception is never written
    assert {entry["name"] for entries in record["artifacts"].values() for entry in entries} == {"a.txt"}


def test_a_failure_outside_the_steps_is_the_raw_exception_in_process() -> None:
    result = run(datasource=flaky_source(), replicates=2)
    assert set(result.errors) == {"baseline_rep_1", "t_rep_1"}
    error = result.errors["baseline_rep_1"]
    assert type(error) is RefusedError and str(error) == "no data for replicate 1"
    assert (error.condition, error.replicate) == ("baseline", 1)  # type: ignore[attr-defined]
    assert "no data for replicate 1" in error.traceback_str  # type: ignore[attr-defined]
    # from a record it is a ReplicateError naming the datasource stage
    stored = load_run("data/compat").errors["baseline_rep_1"]
    assert isinstance(stored, ReplicateError) and stored.step_name.startswith("datasource:")


def test_no_failures_is_an_empty_dict_and_0_27_constructors_and_assignments_work() -> None:
    @pipeline_step()
    def fine(data: int, ctx: Any) -> int:
        ctx.metrics.add("x", 1)
        return data

    exp = Experiment(datasource=numbers(), pipeline=Pipeline([fine()]), plugins=[SerialExecution(progress=False)])
    result = exp.run(replicates=2)
    assert result.errors == {} and result.artifacts == {} and result.get_artifact("a.txt") is None
    # 0.27 code builds a Result by hand, or a plugin assigns its own values
    metrics = result.metrics
    boom_error = ValueError("x")
    built = Result(metrics, artifacts={"m": {"baseline": Path("p")}}, errors={"baseline_rep_0": boom_error})
    assert built.errors == {"baseline_rep_0": boom_error} and built.get_artifact("m") == {"baseline": Path("p")}
    built.artifacts = {"n": {"t": Path("q")}}
    built.errors = {}
    assert built.get_artifact("n") == {"t": Path("q")} and built.errors == {}


# ------------------------------------------------------------------ artifacts


def test_artifacts_are_by_name_then_condition_with_the_lowest_replicates_path() -> None:
    result = run(ParallelExecution(executor_type="thread", max_workers=2, progress=False))
    root = Path("data/compat/v0").resolve()
    expected = {
        "baseline": root / "replicate_0" / "baseline" / "boom" / "a.txt",
        "t": root / "replicate_0" / "t" / "boom" / "a.txt",
    }
    assert result.artifacts == {"a.txt": expected}
    assert result.get_artifact("a.txt") == expected and result.get_artifact("missing") is None
    assert all(isinstance(path, Path) for path in expected.values())
    assert result.get_artifact("a.txt")["t"].read_bytes() == b"t:0"
    # every stored copy stays reachable
    assert len(result.artifact_entries["baseline"]) == 3 and len(result.artifact_entries["t"]) == 2
    assert sorted(Path(e.path).read_bytes() for e in result.artifact_copies("a.txt")) == sorted(
        [b"baseline:0", b"baseline:1", b"baseline:2", b"t:0", b"t:2"]
    )
    assert {k: {c: Path(p).resolve() for c, p in v.items()} for k, v in load_run("data/compat").artifacts.items()} == {
        "a.txt": expected
    }


# ------------------------------------------------------------------ persistence


def test_to_dict_and_to_json_have_0_27s_shape(tmp_path: Path) -> None:
    result = run()
    data = result.to_dict()
    assert set(data) == {"timestamp", "metrics", "hypotheses", "artifacts", "errors", "provenance"}
    assert data["metrics"]["baseline"]["x"] == [1, 2, 3]
    assert data["metrics"]["treatments"]["t"]["x"] == [1, 3]
    assert data["artifacts"] == ["a.txt"]
    assert data["errors"] == {"t_rep_1": str(result.errors["t_rep_1"])}
    [hyp] = data["hypotheses"]
    assert set(hyp) == {"name", "results", "ranking"} and hyp["name"] == "x_moves"
    assert hyp["results"]["t"]["diff"] == 0  # replicates 0 and 2, paired (t/1 failed)
    text = result.to_json()
    assert isinstance(text, str)
    parsed = json.loads(text)
    assert parsed["errors"] == data["errors"] and parsed["metrics"] == data["metrics"]
    assert text.startswith('{\n  "timestamp"')  # indent=2 by default
    path = tmp_path / "out.json"
    assert result.to_json(path) is None
    assert json.loads(path.read_text())["metrics"] == data["metrics"]


def test_to_parquet_writes_one_row_per_condition_and_metric(tmp_path: Path) -> None:
    numeric = Result(
        ExperimentMetrics(
            baseline=TreatmentMetrics({"x": [1, 2, 3], "y": [0.5]}),
            treatments={"t": TreatmentMetrics({"x": [4.0, 5.0]})},
            hypotheses=[],
        )
    )
    path = tmp_path / "metrics.parquet"
    assert numeric.to_parquet(path) is None
    table = pq.read_table(path)
    assert table.column_names == ["condition", "metric", "values", "mean"]
    assert table.to_pylist() == [
        {"condition": "baseline", "metric": "x", "values": [1.0, 2.0, 3.0], "mean": 2.0},
        {"condition": "baseline", "metric": "y", "values": [0.5], "mean": 0.5},
        {"condition": "t", "metric": "x", "values": [4.0, 5.0], "mean": 4.5},
    ]
    import pandas as pd

    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["condition", "metric", "values", "mean"]
    assert list(frame["values"][2]) == [4.0, 5.0]

    # text and numbers in one run: no one Arrow type holds both, so values are kept as JSON text
    mixed = tmp_path / "mixed.parquet"
    run().to_parquet(mixed)
    rows = {(r["condition"], r["metric"]): r for r in pq.read_table(mixed).to_pylist()}
    assert set(rows) == {(c, m) for c in ("baseline", "t") for m in ("x", "label", "y")}
    assert rows[("baseline", "x")]["values"] == ["1", "2", "3"] and rows[("baseline", "x")]["mean"] == 2.0
    assert rows[("t", "label")]["values"] == ['"r0"', '"r2"'] and rows[("t", "label")]["mean"] is None


# ------------------------------------------------------------------ print_tree


def tree_text(result: Result, *args: str) -> str:
    out = io.StringIO()
    result.print_tree(*args, file=out)
    return out.getvalue()


def test_print_tree_shows_conditions_replicates_steps_and_what_they_did() -> None:
    result = run()
    text = tree_text(result)
    lines = text.splitlines()
    assert lines[0] == "Experiment Summary"
    for part in ("Treatment 'baseline'", "Treatment 't'", "Replicate 0", "Replicate 2", "Step boom", "Step tail"):
        assert part in text, text
    assert "Write Metrics" in text and "x: 3" in text and "a.txt" in text
    assert "RefusedError: bad thing in t/1" in text
    # the failed replicate lists the step that failed, not the ones after it
    t_part = text[text.index("Treatment 't'") :]
    failed = t_part[t_part.index("Replicate 1") : t_part.index("Replicate 2")]
    assert "Step boom" in failed and "Step tail" not in failed
    # the same tree from the stored run
    assert tree_text(load_run("data/compat")) == text


def test_print_tree_formats_and_bad_formats() -> None:
    result = run()
    by_step = tree_text(result, "treatment > step > action")
    assert "Replicate 0" not in by_step and "(replicate 0)" in by_step and "Step boom" in by_step
    flat = tree_text(result, "replicate")
    assert "Treatment" not in flat and "Step tail" in flat
    for bad, match in (("treatment > colour", "colour"), ("action > step", "final")):
        with pytest.raises(ValidationError, match=match) as caught:
            result.print_tree(bad)
        assert isinstance(caught.value, ValueError)  # what 0.27 code catches
