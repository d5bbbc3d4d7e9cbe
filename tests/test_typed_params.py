"""Treatment parameters are stored with their types and come back as ``param.<key>`` columns.

run.json used to keep ``"delta": "-2.0"`` (a repr); now ``-2.0``. A run stored the old way
still loads (its reprs read back as values) and still resumes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console

from crystallize import Experiment, Pipeline, SeedPlugin, Treatment, data_source, pipeline_step
from crystallize.cli.export import export_run
from crystallize.cli.tables import show_run
from crystallize.provenance import treatment_params, typed_value
from crystallize.runs import load_run


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@data_source
def zero(ctx):
    return 0.0


@pipeline_step()
def use(data, ctx):
    for key in ("delta", "flag", "label", "widths", "mixed", "big", "odd"):
        ctx.get(key, None)  # read every key, so none is reported unread
    delta = ctx.get("delta", 0.0)
    if Path("fail_once").exists() and ctx["condition"] == "ints" and ctx["replicate"] == 1:
        raise RuntimeError("transient failure")
    ctx.metrics.add("score", float(data) + float(delta) + ctx["replicate"])
    return data


TREATMENTS = [
    Treatment("floats", {"delta": -2.0, "flag": True, "label": "adam", "widths": [1, 2.5], "mixed": 1}),
    Treatment("ints", {"delta": 3, "flag": False, "label": "1", "widths": (4,), "mixed": 1.0}),
    Treatment("numpy", {"delta": np.float64(0.5), "mixed": True, "big": 2**70, "odd": Opaque()}),
    Treatment("strings", {"mixed": "1"}),
]


def _experiment(name: str = "typed") -> Experiment:
    return Experiment(
        zero(), Pipeline([use()]), [SeedPlugin(seed=5)], name=name, treatments=list(TREATMENTS), replicates=2
    )


EXPECTED = {
    "baseline": None,
    "floats": {"delta": -2.0, "flag": True, "label": "adam", "widths": [1, 2.5], "mixed": 1},
    "ints": {"delta": 3, "flag": False, "label": "1", "widths": [4], "mixed": 1.0},
    "numpy": {"delta": 0.5, "mixed": True, "big": 2**70, "odd": {"repr": "Opaque()", "type": f"{__name__}.Opaque"}},
    "strings": {"mixed": "1"},
}


def _types(treatments: dict) -> dict:
    return {name: {k: type(v).__name__ for k, v in (values or {}).items()} for name, values in treatments.items()}


def test_values_keep_their_types_in_run_json_and_load_run() -> None:
    result = _experiment().run()
    raw = Path("data/typed/v0/run.json").read_text()
    assert '"delta": -2.0' in raw and '"delta": "-2.0"' not in raw
    for treatments in (
        result.provenance["treatments"],
        json.loads(raw)["provenance"]["treatments"],
        load_run("data/typed/v0").provenance["treatments"],
    ):
        assert treatments == EXPECTED
        # 1, 1.0, True and "1" are equal to Python's == but stay apart by type
        assert _types(treatments) == _types(EXPECTED)
        assert [type(treatments[n]["mixed"]) for n in ("floats", "ints", "numpy", "strings")] == [int, float, bool, str]


def test_typed_value_keeps_one_and_true_apart() -> None:
    values = [typed_value(v) for v in (1, 1.0, True, "1", np.int64(1), (1,), {"repr": 1, "type": 2})]
    assert [json.dumps(v) for v in values] == [
        "1",
        "1.0",
        "true",
        '"1"',
        "1",
        "[1]",
        json.dumps({"repr": "{'repr': 1, 'type': 2}", "type": "builtins.dict"}),  # never mistaken for a marker
    ]


def test_param_columns_in_to_arrow_to_pandas_and_export(tmp_path: Path) -> None:
    result = _experiment().run()
    for table in (result.to_arrow(), load_run("data/typed/v0").to_arrow()):
        schema = table.schema
        assert table.column_names[:4] == ["condition", "replicate", "metric", "value"]
        assert schema.field("param.delta").type == pa.float64()  # ints and floats: numbers
        assert schema.field("param.flag").type == pa.bool_()
        assert schema.field("param.label").type == pa.string()
        assert schema.field("param.big").type == pa.string()  # beyond int64: JSON text
        rows = {r["condition"]: r for r in table.to_pylist()}
        assert rows["baseline"]["param.delta"] is None and rows["strings"]["param.delta"] is None
        assert rows["floats"]["param.delta"] == -2.0 and rows["ints"]["param.delta"] == 3.0
        assert rows["floats"]["param.flag"] is True and rows["ints"]["param.flag"] is False
        assert rows["ints"]["param.label"] == "1"
        # values of different types (1, 1.0, True, "1") or lists: JSON text, each type still visible
        assert [rows[n]["param.mixed"] for n in ("floats", "ints", "numpy", "strings")] == ["1", "1.0", "true", '"1"']
        assert rows["floats"]["param.widths"] == "[1, 2.5]"
        assert json.loads(rows["numpy"]["param.odd"]) == {"repr": "Opaque()", "type": f"{__name__}.Opaque"}
    frame = result.to_pandas()
    assert frame.loc[frame.condition == "floats", "param.delta"].tolist() == [-2.0, -2.0]
    assert str(frame["param.flag"].dtype) == "boolean"  # not object, beside the baseline's nulls
    assert frame.loc[frame.condition == "ints", "param.flag"].tolist() == [False, False]
    assert frame.loc[frame.condition == "baseline", "param.label"].isna().all()

    where, rows = export_run(load_run("data/typed/v0"), "csv", str(tmp_path / "out.csv"))
    exported = pacsv.read_csv(where)
    assert "param.delta" in exported.column_names and rows == result.to_arrow().num_rows
    by_condition = {r["condition"]: r["param.delta"] for r in exported.to_pylist()}
    assert by_condition == {"baseline": None, "floats": -2.0, "ints": 3.0, "numpy": 0.5, "strings": None}
    # the stored metrics table stays the four long-form columns
    import pyarrow.parquet as pq

    assert pq.read_table("data/typed/v0/metrics.parquet").column_names == ["condition", "replicate", "metric", "value"]


def test_show_lists_each_treatments_parameters() -> None:
    _experiment().run()
    text = _show("data/typed/v0")
    assert "treatments" in text
    line = next(line for line in text.splitlines() if "floats" in line and "adam" in line)
    assert "-2.0" in line and "True" in line and "[1, 2.5]" in line
    assert "Opaque()" in text


def _show(location: str) -> str:
    buffer = io.StringIO()
    show_run(Console(file=buffer, width=250, color_system=None), load_run(location), location)
    return buffer.getvalue()


# ---------------------------------------------------------------- runs stored before typed values


def _to_old_format(run_json: Path) -> None:
    """Rewrite a fresh run.json as the code before typed values wrote it: reprs, no git/versions/host."""
    record = json.loads(run_json.read_text())
    provenance = record["provenance"]
    for key in ("git", "versions", "host"):
        provenance.pop(key)
    provenance["treatments"] = {
        name: None if values is None else {k: repr(_original(name, k)) for k in values}
        for name, values in provenance["treatments"].items()
    }
    run_json.write_text(json.dumps(record, indent=2))


def _original(name: str, key: str):
    return next(t for t in TREATMENTS if t.name == name).apply_map[key]


def test_a_run_stored_with_repr_values_loads_typed_and_resumes() -> None:
    Path("fail_once").write_text("")
    first = _experiment().run()
    assert first.failed == 1
    run_json = Path("data/typed/v0/run.json")
    _to_old_format(run_json)
    old = json.loads(run_json.read_text())["provenance"]["treatments"]
    assert old["floats"]["delta"] == "-2.0" and old["ints"]["widths"] == "(4,)"

    loaded = load_run("data/typed/v0")
    params = treatment_params(loaded.provenance)
    assert params["floats"] == {"delta": -2.0, "flag": True, "label": "adam", "widths": [1, 2.5], "mixed": 1}
    assert params["numpy"]["odd"] == "Opaque()"  # a repr Python cannot read back stays text
    assert params["numpy"]["delta"] == 0.5 and params["numpy"]["mixed"] is True  # "np.float64(0.5)", "True"
    assert loaded.to_arrow().schema.field("param.delta").type == pa.float64()
    assert "adam" in _show("data/typed/v0")

    Path("fail_once").unlink()
    resumed = _experiment().run(strategy="resume")
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 9}
    assert resumed.failed == 0 and resumed.metrics.treatments["ints"].metrics["score"] == [3.0, 4.0]
    stored = json.loads(run_json.read_text())["provenance"]
    assert stored["treatments"] == EXPECTED and "versions" in stored  # rewritten in the typed form


def test_an_interrupted_run_shows_its_typed_parameters_from_the_plan() -> None:
    _experiment().run()
    Path("data/typed/v0/run.json").unlink()  # as if the driver died before the end
    loaded = load_run("data/typed/v0")
    assert loaded.provenance["finished"] is False
    assert treatment_params(loaded.provenance)["floats"]["delta"] == -2.0
    assert "adam" in _show("data/typed/v0")


def test_integer_parameters_stay_integers_in_pandas() -> None:
    treatments = [Treatment("three", {"delta": 3}), Treatment("four", {"delta": 4})]
    result = Experiment(zero(), Pipeline([use()]), name="ints", treatments=treatments, replicates=1).run()
    assert result.to_arrow().schema.field("param.delta").type == pa.int64()
    frame = result.to_pandas()
    assert str(frame["param.delta"].dtype) == "Int64"  # pandas' nullable integers: 3, not 3.0
    by_condition = frame.set_index("condition")["param.delta"]
    assert pd.isna(by_condition["baseline"]) and (by_condition["three"], by_condition["four"]) == (3, 4)
