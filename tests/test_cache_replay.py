"""A cache hit looks exactly like the miss that stored it, to the steps after it and to the run."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from crystallize import Experiment, Pipeline, SeedPlugin, SerialExecution, Treatment, data_source, pipeline_step


@data_source
def zero(ctx):
    return 0.0


@pipeline_step(cacheable=True)
def global_draw(data, ctx):
    return data + float(np.random.normal()) + random.random()


@pipeline_step(cacheable=True)
def rng_draw(data, ctx):
    return data + float(ctx.rng.normal())


@pipeline_step()
def later_global(data, ctx):
    return data, {"later": float(np.random.normal()) + random.random(), "value": data}


@pipeline_step()
def later_rng(data, ctx):
    return data, {"later": float(ctx.rng.normal()), "value": data}


@pipeline_step(cacheable=True)
def adds_a_key(data, ctx):
    ctx.add("derived", data + 5.0)
    return data


@pipeline_step()
def reads_the_key(data, ctx):
    return data, {"derived": ctx["derived"]}


@pipeline_step(cacheable=True)
def reads_gain(data, ctx):
    return data + ctx.get("gain", 1.0)


@pipeline_step()
def record(data, ctx):
    return data, {"value": data}


def run_twice(*steps, treatments=(), replicates=3):
    def once():
        experiment = Experiment(
            zero(),
            Pipeline(list(steps)),
            name="replay",
            treatments=list(treatments),
            replicates=replicates,
            plugins=[SeedPlugin(seed=11), SerialExecution(progress=False)],
        )
        result = experiment.run()
        assert result.errors == {}
        return result

    return once(), once()


def hits(result, step: str) -> int:
    return sum(s[step]["cache_hits"] for s in result.provenance["steps"].values())


@pytest.mark.parametrize("first,later", [(global_draw, later_global), (rng_draw, later_rng)])
def test_steps_after_a_cached_random_step_draw_the_same_on_a_hit(first, later) -> None:
    miss, hit = run_twice(first(), later())
    assert hits(miss, first().name) == 0 and hits(hit, first().name) == 3
    assert hit.metrics.baseline.metrics == miss.metrics.baseline.metrics
    assert len(set(miss.metrics.baseline.metrics["value"])) == 3  # one draw per replicate, not one shared


def test_context_keys_a_cached_step_adds_are_replayed_on_a_hit() -> None:
    miss, hit = run_twice(adds_a_key(), reads_the_key())
    assert hits(hit, "adds_a_key") == 3
    assert hit.metrics.baseline.metrics["derived"] == miss.metrics.baseline.metrics["derived"] == [5.0] * 3


def test_keys_read_by_a_cached_step_count_as_read_on_a_hit(caplog: pytest.LogCaptureFixture) -> None:
    treatment = Treatment("louder", {"gain": 3.0})
    with caplog.at_level(logging.WARNING):
        miss, hit = run_twice(reads_gain(), record(), treatments=[treatment])
    assert hits(hit, "reads_gain") == 6
    assert hit.metrics.treatments["louder"].metrics["value"] == [3.0] * 3
    assert miss.warnings == [] and hit.warnings == []
    assert "no replicate read" not in caplog.text


def test_a_value_read_in_the_body_keys_the_entry() -> None:
    _, hit = run_twice(reads_gain(), record(), treatments=[Treatment("louder", {"gain": 3.0})])
    assert hit.metrics.baseline.metrics["value"] == [1.0] * 3
    assert hit.metrics.treatments["louder"].metrics["value"] == [3.0] * 3
