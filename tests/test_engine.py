"""Behavioural suite: every test runs once per executor (the ``execution`` fixture).

Results must not depend on the executor: same seed, same metrics, errors,
artifacts and hypothesis results under serial, thread, process and asyncio.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from crystallize import (
    Experiment,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    hypothesis,
    pipeline_step,
    verifier,
)

# ---------------------------------------------------------------- module-level parts


@data_source
def noisy_source(ctx):
    return [random.random(), float(np.random.random())]


@data_source
def zeros(ctx):
    return [0.0, 0.0, 0.0]


@pipeline_step
def add_delta(data, ctx, *, delta=0.0):
    return [x + delta for x in data]


@pipeline_step
def add_noise(data, ctx):
    return [x + random.random() + float(np.random.random()) for x in data]


@pipeline_step
def record_total(data, ctx):
    ctx.metrics.add("total", float(sum(data)))
    return data


@pipeline_step
def record_framework(data, ctx):
    ctx.metrics.add("rep", ctx["replicate"])
    ctx.metrics.add("seed", ctx["seed_used"])
    ctx.metrics.add("cond", ctx["condition"])
    return data


@pipeline_step
def explode_on(data, ctx, *, bad_condition="t", bad_replicate=1):
    if ctx["condition"] == bad_condition and ctx["replicate"] == bad_replicate:
        raise RuntimeError(f"kaboom in {bad_condition}/{bad_replicate}")
    return data


@pipeline_step
def write_artifact(data, ctx):
    ctx.artifacts.add("out.txt", f"{ctx['condition']}:{ctx['replicate']}")
    ctx.artifacts.add("raw.bin", bytes([ctx["replicate"], 7, 255]))
    return data


@pipeline_step
async def async_noise(data, ctx):
    first = random.random()
    await asyncio.sleep(0.001)
    second = float(np.random.random())
    await asyncio.sleep(0)
    return [x + first + second for x in data], {"async_draw": first + second}


@pipeline_step
async def async_double(data, ctx):
    await asyncio.sleep(0)
    return [2 * x for x in data]


@pipeline_step
def read_delta(data, ctx):
    return data, {"delta_seen": ctx["delta"]}


def rebind_delta(ctx):
    ctx.add("delta", 99)


def rebind_delta_twice(ctx):
    ctx.add("delta", 99)
    ctx.add("delta", 100)


@verifier
def pairing_verifier(baseline, treatment):
    return {"p_value": 0.5, "baseline": list(baseline["rep"]), "treatment": list(treatment["rep"])}


@hypothesis(verifier=pairing_verifier(), metrics="rep")
def paired(result):
    return result["p_value"]


def make_experiment(execution, steps, *, name="exp", treatments=(), replicates=3, source=None, **kwargs):
    return Experiment(
        source if source is not None else noisy_source(),
        Pipeline(list(steps)),
        [SeedPlugin(seed=123), execution],
        name=name,
        treatments=list(treatments),
        replicates=replicates,
        **kwargs,
    )


def sorted_frame(result):
    frame = result.to_pandas()
    return frame.sort_values(["condition", "metric", "replicate"]).reset_index(drop=True)


# ---------------------------------------------------------------- tests


def test_metrics_match_serial(execution):
    steps = [add_delta(), add_noise(), record_total()]
    treatments = [Treatment("plus", {"delta": 1.0}), Treatment("minus", {"delta": -2.0})]
    result = make_experiment(execution, steps, treatments=treatments, replicates=4).run()
    reference = make_experiment(
        SerialExecution(progress=False), steps, name="ref", treatments=treatments, replicates=4
    ).run()

    assert not result.errors
    assert result.metrics.baseline.metrics["total"] == reference.metrics.baseline.metrics["total"]
    for name in ("plus", "minus"):
        assert result.metrics.treatments[name].metrics["total"] == reference.metrics.treatments[name].metrics["total"]
    assert sorted_frame(result).equals(sorted_frame(reference))
    # the draws actually vary between replicates
    assert len(set(result.metrics.baseline.metrics["total"])) == 4


def test_async_step_draws_match_serial(execution):
    steps = [async_noise(), record_total()]
    result = make_experiment(execution, steps, treatments=[Treatment("t", {})], replicates=4).run()
    reference = make_experiment(
        SerialExecution(progress=False), steps, name="ref", treatments=[Treatment("t", {})], replicates=4
    ).run()
    assert not result.errors
    assert result.metrics.baseline.metrics["async_draw"] == reference.metrics.baseline.metrics["async_draw"]
    assert result.metrics.treatments["t"].metrics["total"] == reference.metrics.treatments["t"].metrics["total"]


def test_metrics_are_in_replicate_order(execution):
    n = 7
    result = make_experiment(execution, [record_framework()], treatments=[Treatment("t", {})], replicates=n).run()
    assert result.metrics.baseline.metrics["rep"] == list(range(n))
    assert result.metrics.treatments["t"].metrics["rep"] == list(range(n))
    assert result.metrics.baseline.replicates["rep"] == list(range(n))


def test_common_seed_per_replicate(execution):
    n = 4
    treatments = [Treatment("a", {}), Treatment("b", {})]
    result = make_experiment(execution, [record_framework()], treatments=treatments, replicates=n).run()
    base = result.metrics.baseline.metrics["seed"]
    assert result.metrics.treatments["a"].metrics["seed"] == base
    assert result.metrics.treatments["b"].metrics["seed"] == base
    assert len(set(base)) == n
    seeds = result.provenance["seeds"]
    for condition in ("baseline", "a", "b"):
        assert seeds[condition] == [base[r] for r in range(n)]  # 0.27's shape: a list in replicate order
        assert result.provenance["seeds_by_replicate"][condition] == {r: base[r] for r in range(n)}
    assert result.provenance["root_seed"] == 123


def test_step_error_is_recorded_and_run_continues(execution):
    steps = [record_framework(), explode_on(), record_total()]
    result = make_experiment(execution, steps, treatments=[Treatment("t", {})], replicates=3).run()

    assert set(result.replicate_errors) == {"t"}
    assert set(result.replicate_errors["t"]) == {1}
    error = result.replicate_errors["t"][1]
    assert error.step == "explode_on"
    assert error.exception_type == "RuntimeError"
    assert "kaboom in t/1" in error.traceback
    assert "kaboom in t/1" in error.message
    assert error.condition == "t" and error.replicate == 1
    # other replicates are present
    assert result.metrics.treatments["t"].replicates["total"] == [0, 2]
    assert result.metrics.baseline.metrics["rep"] == [0, 1, 2]
    assert result.provenance["replicates_failed"] == {"baseline": 0, "t": 1}
    assert result.failed == 1


def test_hypotheses_pair_by_replicate(execution):
    steps = [record_framework(), explode_on(bad_replicate=2)]
    exp = make_experiment(execution, steps, treatments=[Treatment("t", {})], replicates=4, hypotheses=[paired])
    result = exp.run()
    hyp = result.get_hypothesis("paired")
    assert hyp is not None
    assert hyp.dropped_pairs == {"t": 1}
    out = hyp.results["t"]
    assert out["baseline"] == [0, 1, 3]
    assert out["treatment"] == [0, 1, 3]
    assert hyp.ranking["best"] == "t"


def test_artifacts_land_on_disk_and_in_manifest(execution):
    exp = make_experiment(execution, [write_artifact()], treatments=[Treatment("t", {})], replicates=2)
    result = exp.run()
    assert not result.errors
    root = Path("data") / "exp" / "v0"
    for condition in ("baseline", "t"):
        entries = {(Path(e.path).parent.parent.parent.name, e.name): e for e in result.artifact_entries[condition]}
        assert len(result.artifact_entries[condition]) == 4
        for rep in range(2):
            text_path = root / f"replicate_{rep}" / condition / "write_artifact" / "out.txt"
            bin_path = root / f"replicate_{rep}" / condition / "write_artifact" / "raw.bin"
            expected_text = f"{condition}:{rep}".encode()
            expected_bin = bytes([rep, 7, 255])
            assert text_path.read_bytes() == expected_text
            assert bin_path.read_bytes() == expected_bin
            for name, payload, path in (("out.txt", expected_text, text_path), ("raw.bin", expected_bin, bin_path)):
                entry = entries[(f"replicate_{rep}", name)]
                assert entry.step == "write_artifact"
                assert entry.size == len(payload)
                assert entry.checksum == hashlib.sha256(payload).hexdigest()
                assert Path(entry.path).resolve() == path.resolve()
    assert len(result.artifact_copies("out.txt")) == 4


def test_async_steps_are_awaited(execution):
    result = make_experiment(execution, [async_double(), record_total()], source=zeros(), replicates=2).run()
    assert not result.errors
    assert result.metrics.baseline.metrics["total"] == [0.0, 0.0]
    exp = make_experiment(
        execution, [add_delta(delta=1.5), async_double(), record_total()], source=zeros(), name="exp2", replicates=2
    )
    result = exp.run()
    assert not result.errors
    assert result.metrics.baseline.metrics["total"] == [9.0, 9.0]


def test_second_run_claims_next_version(execution):
    exp = make_experiment(execution, [write_artifact(), add_noise(), record_total()], replicates=2)
    first = exp.run()
    second = exp.run()
    assert first.provenance["version"] == 0
    assert second.provenance["version"] == 1
    assert not second.errors
    assert second.metrics.baseline.metrics["total"] == first.metrics.baseline.metrics["total"]
    base = Path("data") / "exp"
    assert (base / "v0" / "replicate_1" / "baseline" / "write_artifact" / "out.txt").is_file()
    assert (base / "v1" / "replicate_1" / "baseline" / "write_artifact" / "out.txt").read_bytes() == b"baseline:1"
    assert all(Path(e.path).is_relative_to((base / "v1").resolve()) for e in second.artifact_entries["baseline"])


def test_treatment_overrides_initial_ctx(execution):
    exp = make_experiment(
        execution,
        [read_delta()],
        treatments=[Treatment("big", {"delta": 5})],
        initial_ctx={"delta": 1},
        replicates=2,
    )
    result = exp.run()
    assert not result.errors
    assert result.metrics.baseline.metrics["delta_seen"] == [1, 1]
    assert result.metrics.treatments["big"].metrics["delta_seen"] == [5, 5]


def test_callable_treatment_overrides_initial_ctx_once_and_rebinding_is_an_error(execution):
    # Like a mapping treatment, a callable one may set a key initial_ctx has (it wins); setting it twice raises.
    exp = make_experiment(
        execution,
        [read_delta()],
        treatments=[Treatment("override", rebind_delta), Treatment("rebind", rebind_delta_twice)],
        initial_ctx={"delta": 1},
        replicates=2,
    )
    result = exp.run()
    assert result.metrics.treatments["override"].metrics["delta_seen"] == [99, 99]
    assert {name for name, errors in result.replicate_errors.items() if errors} == {"rebind"}
    assert set(result.replicate_errors["rebind"]) == {0, 1}
    for error in result.replicate_errors["rebind"].values():
        assert error.stage.startswith("treatment:")
        assert error.stage == "treatment:rebind"
        assert error.exception_type == "ContextMutationError"
        assert "delta" in error.message
    assert result.metrics.baseline.metrics["delta_seen"] == [1, 1]


def test_to_arrow_long_form(execution):
    result = make_experiment(execution, [record_framework()], treatments=[Treatment("t", {})], replicates=2).run()
    table = result.to_arrow()
    assert table.column_names == ["condition", "replicate", "metric", "value"]
    rows = table.to_pylist()
    rep_rows = sorted((r["condition"], r["replicate"], r["value"]) for r in rows if r["metric"] == "rep")
    assert rep_rows == [("baseline", 0, "0"), ("baseline", 1, "1"), ("t", 0, "0"), ("t", 1, "1")]
    assert table.num_rows == 2 * 2 * 3


@pytest.mark.parametrize("replicates", [1, 5])
def test_replicate_count(execution, replicates):
    result = make_experiment(execution, [record_framework()], replicates=replicates).run()
    assert result.provenance["replicates_completed"] == {"baseline": replicates}
    assert result.metrics.baseline.metrics["rep"] == list(range(replicates))
