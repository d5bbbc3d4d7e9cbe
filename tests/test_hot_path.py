"""The per-replicate path stays lean without changing what it records (speed itself: benchmarks/)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from crystallize import Experiment, Pipeline, SeedPlugin, SerialExecution, Treatment, data_source, pipeline_step
from crystallize.engine.plan import decode_metric_values, encode_metric_values
from crystallize.runs import load_run
from crystallize.seeding import replicate_seed
from crystallize.store import arrow_columns as cols

REPO = Path(__file__).resolve().parents[1]


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def shift(data, ctx, *, delta: float = 0.0):
    return data + delta


@pipeline_step()
def measure(data, ctx):
    return data, {"value": float(data), "seed": ctx["seed_used"]}


def experiment(replicates: int = 6) -> Experiment:
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([shift(), measure()]),
        treatments=[Treatment("up", {"delta": 1.0}), Treatment("down", {"delta": -1.0})],
        plugins=[SerialExecution(progress=False), SeedPlugin(seed=11)],
        replicates=replicates,
        name="hot",
    )


def test_a_run_in_a_fresh_process_never_imports_pandas(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_hot_path import experiment
        result = experiment().run()
        after_run = "pandas" in sys.modules
        import pyarrow.parquet as pq
        table = pq.read_table("data/hot/v0/metrics.parquet")
        print(table.num_rows, result.failed, after_run)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows, failed, pandas_loaded = done.stdout.split()
    assert (int(rows), int(failed)) == (3 * 6 * 2, 0)  # 3 conditions x 6 replicates x 2 metrics, all stored
    assert pandas_loaded == "False"


def test_a_replicate_seed_is_derived_once_for_all_its_conditions() -> None:
    replicate_seed.cache_clear()
    result = experiment(replicates=5).run()
    info = replicate_seed.cache_info()
    assert info.misses == 5  # three conditions, one derivation per replicate
    assert info.hits == 10
    for condition in ("baseline", "up", "down"):
        assert result.provenance["seeds"][condition] == [replicate_seed(11, r) for r in range(5)]


def test_run_json_keeps_no_per_replicate_seed_tables_and_loading_rebuilds_them() -> None:
    live = experiment().run()
    record = json.loads(Path("data/hot/v0/run.json").read_text())
    assert "seeds" not in record["provenance"] and "seeds_by_replicate" not in record["provenance"]
    assert record["provenance"]["root_seed"] == 11
    loaded = load_run("data/hot")
    assert loaded.provenance["seeds"] == live.provenance["seeds"]
    assert loaded.provenance["seeds_by_replicate"] == live.provenance["seeds_by_replicate"]
    assert loaded.metrics.treatments["up"].metrics == live.metrics.treatments["up"].metrics


@pytest.mark.parametrize(
    "values",
    [
        [1.0, 2, -3.5e-300, 1e300, 5e-324, -0.0, 0.1 + 0.2],
        [float("nan"), 1.0],
        [float("inf"), -math.inf],
        [True, 1, None, "text \u00e9\u4e2d"],
        [],
        [2**80, -(2**70)],
    ],
)
def test_the_fast_metric_encoding_is_the_json_the_general_one_writes(values: list) -> None:
    text = encode_metric_values(values)
    assert text == json.dumps(values, allow_nan=True, separators=(",", ":"))
    decoded = decode_metric_values(text)
    assert [type(v) for v in decoded] == [type(v) for v in values]
    assert [repr(v) for v in decoded] == [repr(v) for v in values]


def test_string_columns_match_pyarrow_for_ascii_unicode_and_nulls() -> None:
    for values in (["a", "bc", ""], ["\u00e9t\u00e9", "x", "\U0001f600"], [None, "a", None, "\u00fc"], []):
        built = cols.strings(values)
        assert built.type == pa.string()
        assert built.to_pylist() == values
        assert built.equals(pa.array(values, pa.string()))


def test_number_bool_list_and_struct_columns_match_pyarrow() -> None:
    floats = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1]
    built = cols.float64s(floats)
    assert [math.copysign(1, v) for v in built.to_pylist()] == [math.copysign(1, v) for v in floats]
    assert built.to_pylist() == floats
    assert cols.int64s([1, None, -(2**63)]).equals(pa.array([1, None, -(2**63)], pa.int64()))
    assert cols.bools([True, False, True] * 5).equals(pa.array([True, False, True] * 5, pa.bool_()))
    item = pa.struct([("name", pa.string()), ("n", pa.int64())])
    children = [cols.strings(["a", "b", "c"]), cols.int64s([1, 2, 3])]
    nested = cols.lists([2, None, 0, 1], cols.structs(children, item), pa.list_(item))
    expected = [[{"name": "a", "n": 1}, {"name": "b", "n": 2}], None, [], [{"name": "c", "n": 3}]]
    assert nested.to_pylist() == expected
    assert nested.equals(pa.array(expected, pa.list_(item)))
    assert cols.nulls(3, pa.string()).to_pylist() == [None, None, None]


def test_an_interrupt_while_a_part_is_written_keeps_its_outcomes_for_the_next_flush(tmp_path: Path) -> None:
    from crystallize.engine.plan import ReplicateOutcome
    from crystallize.store.filesystem import Store
    from crystallize.store.records import RunRecorder, decode_part, signing_key

    store = Store(str(tmp_path / "store"))
    recorder = RunRecorder(store, "exp", 0, flush_seconds=3600)
    recorder.flush()  # nothing buffered: nothing written
    recorder._last_flush = time.monotonic()  # the first record would flush at once otherwise
    outcomes = [ReplicateOutcome("baseline", r, r, {"m": [float(r)]}) for r in range(3)]
    for outcome in outcomes:
        recorder.record(outcome)
    real_write = store.write_bytes
    calls = []

    def interrupted(relative: str, data, **options):
        calls.append(relative)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first part goes out
        return real_write(relative, data, **options)

    store.write_bytes = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        recorder.flush()
    recorder.flush()  # the run's final flush
    assert len(calls) == 2
    stored = decode_part(store.read_bytes(calls[1]), signing_key())
    assert [(o.replicate, o.metrics) for o in stored] == [(r, {"m": [float(r)]}) for r in range(3)]


def test_garbage_collection_is_paced_during_a_run_and_restored_after() -> None:
    import gc

    from crystallize import BasePlugin

    seen: list[int] = []

    class Watch(BasePlugin):
        def after_step(self, experiment, step, data, ctx):  # runs in this process under SerialExecution
            seen.append(gc.get_threshold()[0])

    before = gc.get_threshold()
    exp = experiment(replicates=2)
    exp.plugins.append(Watch())
    assert exp.run().failed == 0
    assert seen and all(threshold >= 20_000 for threshold in seen)
    assert gc.get_threshold() == before


@pipeline_step()
async def draw_twice(data, ctx):
    import asyncio
    import random

    import numpy as np

    first = random.random()
    await asyncio.sleep(0)  # another replicate runs here
    return data, {"draws": first + float(np.random.random())}


@pytest.mark.parametrize("seed_fn", [None, "custom"])
def test_async_replicates_keep_their_own_global_generators_and_the_loops_come_back(seed_fn) -> None:
    import random

    import numpy as np

    from crystallize import AsyncExecution

    def seeded(seed: int) -> None:  # a user's seed function: the engine cannot assume it reseeds
        random.seed(seed + 1)
        np.random.seed((seed + 1) % 2**32)

    def build(execution):
        return Experiment(
            datasource=zero(),
            pipeline=Pipeline([draw_twice()]),
            treatments=[Treatment("t", {"delta": 1.0})],
            plugins=[execution, SeedPlugin(seed=5, seed_fn=seeded if seed_fn else None)],
            replicates=30,
            name="turns",
        )

    random.seed(123)
    np.random.seed(123)
    before = (random.getstate(), np.random.get_state()[1].tolist())
    result = build(AsyncExecution(progress=False)).run()
    assert (random.getstate(), np.random.get_state()[1].tolist()) == before  # the caller's state is untouched
    reference = build(SerialExecution(progress=False)).run()
    assert result.metrics.baseline.metrics["draws"] == reference.metrics.baseline.metrics["draws"]
    assert result.metrics.treatments["t"].metrics["draws"] == reference.metrics.treatments["t"].metrics["draws"]
    assert len(set(result.metrics.baseline.metrics["draws"])) == 30
