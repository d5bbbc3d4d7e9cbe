"""``Experiment.apply``: one pass of the pipeline, up to the first exit step, storing nothing."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

import crystallize
from crystallize import (
    Experiment,
    Pipeline,
    PipelineStep,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    exit_step,
    pipeline_step,
)
from crystallize.testing.steps import must_not_run, total

# ---------------------------------------------------------------- module-level parts

CALLS: list[str] = []


@data_source
def numbers(ctx):
    CALLS.append("datasource")
    return [1.0, 2.0, 3.0]


@data_source
def noisy(ctx):
    return [random.random(), float(np.random.random())]


@pipeline_step
def add_delta(data, ctx, *, delta=0.0):
    return [x + delta for x in data]


@pipeline_step
def double(data, ctx):
    return [2 * x for x in data]


@pipeline_step
def fail_here(data, ctx):
    raise ValueError("bad input for fail_here")


@pipeline_step
async def async_add_one(data, ctx):
    await asyncio.sleep(0)
    return [x + 1 for x in data]


@pipeline_step
def artifact_step(data, ctx):
    ctx.artifacts.add("dump.txt", repr(data))
    ctx.metrics.add("n", len(data))
    return data


@pipeline_step
def draw(data, ctx):
    return [random.random(), float(np.random.random()), *data]


EVENTS: list[str] = []


class Scaler(PipelineStep):
    def setup(self, ctx):
        EVENTS.append("setup")
        ctx.add("factor", 10)

    def teardown(self, ctx):
        EVENTS.append("teardown")

    def __call__(self, data, ctx):
        EVENTS.append("call")
        return [x * ctx["factor"] for x in data]


def make(steps, **kwargs):
    kwargs.setdefault("name", "app")
    plugins = kwargs.pop("plugins", [SerialExecution(progress=False)])
    return Experiment(numbers(), Pipeline(list(steps)), plugins, **kwargs)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- tests


def test_apply_stops_after_first_exit_step():
    exp = make([add_delta(delta=1.0), exit_step(double()), exit_step(total()), must_not_run()])
    assert exp.apply() == [4.0, 6.0, 8.0]


def test_apply_without_exit_step_runs_everything():
    exp = make([add_delta(delta=1.0), double(), total()])
    assert exp.apply() == 18.0


def test_apply_unpacks_data_and_metrics():
    exp = make([exit_step(total()), must_not_run()])
    output = exp.apply()
    assert output == 6.0
    assert not isinstance(output, tuple)


def test_apply_awaits_async_steps():
    exp = make([async_add_one(), exit_step(double())])
    assert exp.apply() == [4.0, 6.0, 8.0]


def test_apply_runs_setup_and_teardown():
    EVENTS.clear()
    exp = make([Scaler(), exit_step(total())])
    assert exp.apply() == 60.0
    assert EVENTS == ["setup", "call", "teardown"]


def test_apply_with_data_skips_datasource():
    CALLS.clear()
    exp = make([double(), total()])
    assert exp.apply(data=[5.0]) == 10.0
    assert CALLS == []
    assert exp.apply() == 12.0
    assert CALLS == ["datasource"]


def test_apply_with_treatment_object_or_name():
    boost = Treatment("boost", {"delta": 10.0})
    exp = make([add_delta(), total()], treatments=[boost], initial_ctx={"delta": 1.0})
    assert exp.apply() == 9.0
    assert exp.apply(treatment=boost) == 36.0
    assert exp.apply(treatment="boost") == 36.0
    assert exp.apply(treatment=Treatment("other", {"delta": -1.0})) == 3.0
    with pytest.raises(crystallize.ValidationError, match="nope"):
        exp.apply(treatment="nope")


def test_apply_seed_makes_draws_reproducible():
    exp = Experiment(noisy(), Pipeline([draw()]), [SerialExecution(progress=False)], name="rng")
    first = exp.apply(seed=2024)
    second = exp.apply(seed=2024)
    other = exp.apply(seed=2025)
    assert first == second
    assert first != other
    assert len(first) == 4


def test_apply_after_run_stores_nothing():
    exp = make([artifact_step(), total()], plugins=[SeedPlugin(seed=3), SerialExecution(progress=False)], replicates=2)
    result = exp.run()
    assert not result.errors
    base = Path("data") / "app"
    before = snapshot(base)
    assert any(name.endswith("dump.txt") for name in before)
    assert exp.apply() == 6.0
    assert exp.apply(data=[1.0]) == 1.0
    assert snapshot(base) == before
    assert sorted(p.name for p in base.iterdir()) == ["v0"]
    # a later run still claims the next version
    assert exp.run().provenance["version"] == 1


def test_apply_before_any_run_creates_no_store():
    exp = make([artifact_step(), total()])
    assert exp.apply() == 6.0
    assert not Path("data").exists()


def test_apply_failure_raises_pipeline_execution_error():
    exp = make([double(), fail_here(), total()])
    with pytest.raises(crystallize.PipelineExecutionError) as info:
        exp.apply()
    assert info.value.step_name == "fail_here"
    assert "fail_here" in str(info.value)
    assert "bad input for fail_here" in str(info.value)
    assert isinstance(info.value.original_exception, ValueError)


class HookRecorder(crystallize.BasePlugin):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_run(self, experiment):
        self.calls.append("before_run")

    def before_replicate(self, experiment, ctx):
        self.calls.append("before_replicate")

    def before_step(self, experiment, step):
        self.calls.append(f"before_step:{step.name}")

    def after_step(self, experiment, step, data, ctx):
        self.calls.append(f"after_step:{step.name}")

    def after_run(self, experiment, result):
        self.calls.append("after_run")


def test_apply_calls_every_hook_around_one_replicate():
    recorder = HookRecorder()
    exp = make([double(), exit_step(total()), must_not_run()], plugins=[recorder, SerialExecution(progress=False)])
    assert exp.apply() == 12.0
    assert recorder.calls == [
        "before_run",  # as Crystallize 0.27's apply() did
        "before_replicate",
        "before_step:double",
        "after_step:double",
        "before_step:total",
        "after_step:total",
        "after_run",
    ]
