"""Each replicate sees the context as given: lazy copies, zero-copy immutables, read tracking, ctx.rng."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from crystallize import (
    Experiment,
    FrozenContext,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    pipeline_step,
    resource_factory,
)


@data_source
def nothing(ctx):
    return None


def shared(values: dict) -> FrozenContext:
    """A replicate's context over values other replicates share (what the engine builds)."""
    return FrozenContext._trusted(dict(values), shared=list(values), seed=7)


def test_a_mutable_value_is_copied_on_first_read_and_the_original_never_changes() -> None:
    original = {"items": [1, 2], "nested": {"k": [3]}}
    ctx = shared(original)
    first = ctx["items"]
    first.append(99)
    assert ctx["items"] is first  # one copy per replicate, not one per read
    assert ctx.get("nested") is not original["nested"]
    assert original == {"items": [1, 2], "nested": {"k": [3]}}
    other = shared(original)
    assert other["items"] == [1, 2]


def test_a_value_that_is_not_read_is_not_copied() -> None:
    lock = threading.Lock()  # deepcopy refuses locks: reading it would have to warn
    ctx = shared({"lock": lock, "n": 1})
    assert ctx["n"] == 1
    assert ctx._data["lock"] is lock
    assert "lock" in ctx._shared


def test_an_uncopyable_value_is_shared_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    lock = threading.Lock()
    with caplog.at_level("WARNING"):
        assert shared({"uncopyable_lock": lock})["uncopyable_lock"] is lock
    assert "uncopyable_lock" in caplog.text and "resource_factory" in caplog.text


def test_immutable_values_are_never_copied() -> None:
    array = np.arange(1_310_720, dtype=np.float64)  # 10 MiB
    array.flags.writeable = False
    table = pa.table({"x": [1, 2, 3]})
    factory = resource_factory(lambda ctx: object())
    values = {"array": array, "table": table, "factory": factory, "t": (1, "a", 2.0), "s": "text"}
    ctx = shared(values)
    assert ctx["array"] is array and np.shares_memory(ctx["array"], array)
    assert ctx["table"] is table
    assert ctx["factory"] is factory
    assert ctx["t"] is values["t"] and ctx["s"] is values["s"]


def test_a_writable_array_from_a_treatment_is_a_read_only_view_not_a_copy() -> None:
    array = np.zeros(1000)
    ctx = shared({"weights": array})
    view = ctx["weights"]
    assert np.shares_memory(view, array)
    assert not view.flags.writeable
    assert array.flags.writeable  # the treatment's own array is untouched


def test_reads_are_remembered_including_misses_and_membership() -> None:
    ctx = shared({"a": 1, "b": 2})
    ctx["a"]
    ctx.get("missing")
    assert "c" not in ctx
    assert {"a", "missing", "c"} <= ctx._reads
    assert "b" not in ctx._reads


def test_rng_is_a_generator_from_the_replicate_seed_one_stream_per_stage() -> None:
    ctx = shared({})
    ctx._begin_stage(1)
    first = ctx.rng.random(3)
    assert isinstance(ctx.rng, np.random.Generator)
    again = shared({})
    again._begin_stage(1)
    assert np.array_equal(again.rng.random(3), first)
    again._begin_stage(2)
    assert not np.array_equal(again.rng.random(3), first)


def test_setup_that_mutates_a_context_list_leaves_initial_ctx_alone() -> None:
    @pipeline_step()
    def count(data, ctx):
        ctx["log"].append("step")
        return data, {"seen": len(ctx["log"])}

    step = count()

    def setup(ctx):
        ctx["log"].append("setup")

    step.setup = setup  # type: ignore[method-assign]
    experiment = Experiment(
        nothing(),
        Pipeline([step]),
        initial_ctx={"log": []},
        treatments=[Treatment("more", {"log": ["from-treatment"]})],
        replicates=3,
        plugins=[SeedPlugin(seed=1), SerialExecution(progress=False)],
    )
    result = experiment.run()
    assert result.errors == {}
    assert experiment.initial_ctx == {"log": []}
    assert result.metrics.baseline.metrics["seen"] == [2, 2, 2]  # setup's entry, then this replicate's
    assert result.metrics.treatments["more"].metrics["seen"] == [2, 2, 2]
