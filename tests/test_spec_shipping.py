"""The run spec crosses the process boundary once per run (and once per optimize), never per task."""

from __future__ import annotations

import pytest

import crystallize.engine.serialization as serialization
import crystallize.execution.local as local
from crystallize import (
    Experiment,
    GridSearchOptimizer,
    Objective,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    data_source,
    pipeline_step,
    treatment,
)


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def record(data, ctx, *, delta: float = 0.0):
    return data, {"value": data + delta}


def _experiment() -> Experiment:
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline([record()]),
        plugins=[SeedPlugin(seed=1), ParallelExecution(executor_type="process", max_workers=2, progress=False)],
        treatments=[treatment("a", {"delta": 1.0}), treatment("b", {"delta": 2.0})],
        replicates=40,
        name="shipping",
    )


@pytest.fixture
def spec_dumps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = serialization.dumps_spec

    def counting(spec):
        calls.append(1)
        return real(spec)

    monkeypatch.setattr(local, "dumps_spec", counting)
    return calls


def test_run_pickles_the_spec_once_for_120_tasks(spec_dumps: list[int]) -> None:
    result = _experiment().run()
    assert len(spec_dumps) == 1
    assert result.metrics.treatments["b"].metrics["value"] == [2.0] * 40


def test_optimize_pickles_the_spec_once_for_all_trials(spec_dumps: list[int]) -> None:
    search = GridSearchOptimizer({"delta": [3.0, 1.0, 2.0]}, Objective("value", "minimize"), batch_size=1)
    best = _experiment().optimize(search, num_trials=3, replicates_per_trial=4)
    assert len(spec_dumps) == 1
    assert dict(best.apply_map) == {"delta": 1.0}
