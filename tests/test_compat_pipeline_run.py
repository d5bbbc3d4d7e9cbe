"""0.27 compatibility (issue 11, item 6): a pipeline run on its own, with the step cache and provenance."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from crystallize import (
    BasePlugin,
    Experiment,
    FrozenContext,
    Pipeline,
    PipelineExecutionError,
    PipelineStep,
    SeedPlugin,
    SerialExecution,
    data_source,
    pipeline_step,
)
from crystallize.pipelines.pipeline import Pipeline as LegacyPipeline
from crystallize.seeding import replicate_seed

CALLS_FILE = "calls.log"  # in the test's own working folder; a module-level list would be part of the step's code


def _called(label: str) -> None:
    with open(CALLS_FILE, "a", encoding="utf-8") as handle:
        handle.write(label + "\n")


def calls() -> list[str]:
    path = Path(CALLS_FILE)
    return path.read_text(encoding="utf-8").split() if path.exists() else []


@pipeline_step()
def add_delta(data: int, ctx: FrozenContext, delta: int = 1) -> int:
    ctx.add("added", delta)
    ctx.metrics.add("after_add", data + delta)
    return data + delta


@pipeline_step(cacheable=True)
def doubled(data: int, ctx: FrozenContext) -> tuple[int, dict[str, int]]:
    _called("doubled")
    return data * 2 * ctx["factor"], {"doubled": data * 2 * ctx["factor"]}


@pipeline_step()
def use_offset(data: int, ctx: FrozenContext, offset: int) -> int:
    return data + offset


def _pipeline() -> Pipeline:
    return Pipeline([add_delta(delta=3), doubled(), use_offset()])


def test_run_returns_the_output_and_provenance_in_0_27s_shape() -> None:
    ctx = FrozenContext({"factor": 1, "offset": 10})
    output, provenance = _pipeline().run(1, ctx, return_provenance=True)
    assert output == 18
    assert [record["step"] for record in provenance] == ["Add_DeltaStep", "DoubledStep", "Use_OffsetStep"]
    assert all(
        set(record) == {"step", "params", "step_hash", "input_hash", "output_hash", "cache_hit", "ctx_changes"}
        for record in provenance
    )
    add, double, offset = provenance
    assert add["params"] == {"delta": 3}
    assert add["ctx_changes"] == {
        "reads": {},
        "wrote": {"added": {"before": None, "after": 3}},
        "metrics": {"after_add": {"before": (), "after": (4,)}},
    }
    assert double["ctx_changes"] == {
        "reads": {"factor": 1},
        "wrote": {},
        "metrics": {"doubled": {"before": (), "after": (8,)}},
    }
    assert offset["ctx_changes"]["reads"] == {"offset": 10}  # an injected parameter is a read too
    assert add["output_hash"] == double["input_hash"] and double["output_hash"] == offset["input_hash"]
    assert add["input_hash"] != add["output_hash"]
    assert [record["cache_hit"] for record in provenance] == [False, False, False]
    assert dict(ctx.metrics.as_dict()) == {"after_add": (4,), "doubled": (8,)}


def test_get_provenance_is_the_last_runs_and_run_without_it_returns_just_the_output() -> None:
    pipeline = LegacyPipeline([add_delta(delta=1)])
    assert pipeline.get_provenance() == []
    assert pipeline.run(5, FrozenContext()) == 6
    assert [record["params"] for record in pipeline.get_provenance()] == [{"delta": 1}]
    pipeline.get_provenance()[0]["params"] = "changed"
    assert pipeline.get_provenance()[0]["params"] == {"delta": 1}  # a copy each time


def test_a_cacheable_step_is_served_from_the_signed_step_cache_on_the_next_run(tmp_path: Path) -> None:
    first = _pipeline().run(1, FrozenContext({"factor": 1, "offset": 0}), return_provenance=True)
    ctx = FrozenContext({"factor": 1, "offset": 0})
    again = _pipeline().run(1, ctx, return_provenance=True)
    assert calls() == ["doubled"]
    assert again[0] == first[0] == 8
    assert [record["cache_hit"] for record in again[1]] == [False, True, False]
    assert again[1][1]["ctx_changes"] == first[1][1]["ctx_changes"]  # the hit replays reads and metrics
    assert ctx.metrics["doubled"] == (8,)
    entries = [p for p in (tmp_path / ".cache").rglob("*") if p.is_file() and p.parent.name != ".cache"]
    assert entries, "the entry lives in our cache store"

    # A value the step read is part of the key: another factor is a miss, the first one a hit again.
    _pipeline().run(1, FrozenContext({"factor": 3, "offset": 0}))
    _pipeline().run(1, FrozenContext({"factor": 1, "offset": 0}))
    assert calls() == ["doubled", "doubled"]


def test_a_tampered_cache_entry_is_recomputed_not_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline([doubled()])
    assert pipeline.run(2, FrozenContext({"factor": 1})) == 4
    (entry,) = [p for p in (tmp_path / ".cache").rglob("*") if p.is_file() and p.name != "reads.json"]
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 0xFF
    entry.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        output, provenance = pipeline.run(2, FrozenContext({"factor": 1}), return_provenance=True)
    assert output == 4 and provenance[0]["cache_hit"] is False
    assert calls() == ["doubled", "doubled"]
    assert "recomputing it" in caplog.text


def test_pipeline_run_and_experiments_share_cache_entries() -> None:
    @data_source
    def one(ctx: FrozenContext) -> int:
        return 1

    Pipeline([doubled()]).run(1, FrozenContext({"factor": 2}))
    assert calls() == ["doubled"]
    experiment = Experiment(
        one(),
        Pipeline([doubled()]),
        [SerialExecution(progress=False)],
        name="shared",
        initial_ctx={"factor": 2},
        replicates=2,
    )
    result = experiment.run()
    assert calls() == ["doubled"]  # both replicates took the standalone run's entry
    assert result.metrics.baseline.metrics["doubled"] == [4, 4]
    assert result.provenance["steps"]["baseline"]["doubled"]["cache_hits"] == 2


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYSTALLIZE_NO_CACHE", "1")
    for _ in range(2):
        assert Pipeline([doubled()]).run(1, FrozenContext({"factor": 1})) == 2
    assert calls() == ["doubled", "doubled"]


@pipeline_step()
def explode(data: int, ctx: FrozenContext) -> int:
    raise KeyError("zz")


def test_a_failing_step_raises_pipeline_execution_error_and_keeps_the_steps_before() -> None:
    pipeline = Pipeline([add_delta(), explode(), add_delta()])
    with pytest.raises(PipelineExecutionError) as caught:
        pipeline.run(1, FrozenContext(), rep=2, condition="treated")
    error = caught.value
    assert isinstance(error.original_exception, KeyError)
    assert error.__cause__ is error.original_exception
    assert error.step_name == "explode"
    assert "step 'explode'" in str(error) and "condition 'treated'" in str(error) and "replicate 2" in str(error)
    assert [record["step"] for record in pipeline.get_provenance()] == ["Add_DeltaStep"]


@pipeline_step()
async def slow_double(data: int, ctx: FrozenContext) -> int:
    await asyncio.sleep(0)
    return data * 2


def test_arun_awaits_async_steps_on_the_callers_loop_and_run_works_inside_a_loop() -> None:
    pipeline = Pipeline([slow_double(), add_delta(delta=1)])

    async def main() -> tuple[Any, Any]:
        awaited = await pipeline.arun(3, FrozenContext(), return_provenance=True)
        inside = pipeline.run(3, FrozenContext())  # a notebook calls run() in a running loop
        return awaited, inside

    (output, provenance), inside = asyncio.run(main())
    assert output == inside == 7
    assert [record["step"] for record in provenance] == ["Slow_DoubleStep", "Add_DeltaStep"]


def test_verbose_logs_every_value_a_step_read(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_compat_pipeline_run")
    with caplog.at_level(logging.DEBUG, logger="test_compat_pipeline_run"):
        Pipeline([use_offset()]).run(1, FrozenContext({"offset": 41}), verbose=True, logger=logger)
    assert "Read offset -> 41" in caplog.text
    assert "Cache hit rate: 0% (0/1 steps)" in caplog.text


def test_progress_shows_a_bar_over_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert Pipeline([add_delta(), use_offset()]).run(1, FrozenContext({"offset": 1}), progress=True) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and "Steps" in captured.err


def test_the_experiments_plugins_see_each_step() -> None:
    seen: list[tuple[str, str, Any]] = []

    class Watch(BasePlugin):
        def before_step(self, experiment: Any, step: PipelineStep) -> None:
            seen.append(("before", step.name, experiment))

        def after_step(self, experiment: Any, step: PipelineStep, data: Any, ctx: FrozenContext) -> None:
            seen.append(("after", step.name, data))

    class Holder:
        def __init__(self) -> None:
            self.plugins = [Watch(), BasePlugin()]

    holder = Holder()
    Pipeline([add_delta(delta=2)]).run(1, FrozenContext(), experiment=holder)
    assert seen == [("before", "add_delta", holder), ("after", "add_delta", 3)]


def test_a_context_that_is_not_a_frozen_context_is_refused() -> None:
    with pytest.raises(TypeError, match="FrozenContext"):
        Pipeline([add_delta()]).run(1, {"a": 1})  # type: ignore[arg-type]


@pipeline_step(cacheable=True)
def noisy(data: int, ctx: FrozenContext) -> tuple[int, dict[str, float]]:
    _called("noisy")
    return data, {"draw": float(ctx.rng.random())}


def test_ctx_rng_draws_as_in_the_replicate_with_that_seed_and_keys_the_cache() -> None:
    @data_source
    def zero(ctx: FrozenContext) -> int:
        return 0

    experiment = Experiment(
        zero(), Pipeline([noisy()]), [SeedPlugin(seed=5), SerialExecution(progress=False)], name="rng", replicates=1
    )
    (in_experiment,) = experiment.run().metrics.baseline.metrics["draw"]
    assert calls() == ["noisy"]

    def draw(seed: int) -> float:
        ctx = FrozenContext({"seed_used": seed})
        Pipeline([noisy()]).run(0, ctx)
        return ctx.metrics["draw"][0]

    seed = replicate_seed(5, 0)
    assert draw(seed) == in_experiment  # the experiment's cache entry, and the same stream
    assert calls() == ["noisy"]
    other = draw(seed + 1)  # another seed: a miss, another draw
    assert other != in_experiment
    assert calls() == ["noisy", "noisy"]
