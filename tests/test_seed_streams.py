"""optimize() searches on the root seed's search stream, run() confirms on its main stream.

A confirming run must never see the replicates that chose the winner, and both must stay a pure
function of (root seed, stream, replicate index): the same command gives the same numbers
whatever ran before in the process and on whichever executor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crystallize import (
    Experiment,
    GridSearchOptimizer,
    Objective,
    Pipeline,
    SeedPlugin,
    Treatment,
    data_source,
    pipeline_step,
)
from crystallize.seeding import MAIN_STREAM, SEARCH_STREAM, replicate_seed, seed_stream, stream_root_seed

REPLICATES = 6


@data_source
def noise(ctx):
    return ctx.rng.normal(size=4)


@pipeline_step()
def score(data, ctx, delta: float = 0.0):
    ctx.metrics.add("score", float(data.sum() + delta))
    ctx.metrics.add("seed", int(ctx["seed_used"]))
    return data


def build(seed: int = 7, execution=None, auto_seed: bool = True) -> Experiment:
    plugins = [SeedPlugin(seed=seed, auto_seed=auto_seed)]
    if execution is not None:
        plugins.append(execution)
    return Experiment(
        datasource=noise(),
        pipeline=Pipeline([score()]),
        treatments=[Treatment("shift", {"delta": 1.0})],
        replicates=REPLICATES,
        plugins=plugins,
        name="streams",
    )


def optimize(experiment: Experiment) -> Treatment:
    grid = GridSearchOptimizer({"delta": [-1.0, 0.0, 1.0]}, Objective("score", "minimize"))
    return experiment.optimize(grid, num_trials=3, replicates_per_trial=REPLICATES)


def test_main_stream_is_the_seed_every_earlier_release_used() -> None:
    # run()'s seeds do not change: SeedSequence(root, spawn_key=(replicate,)), as before streams existed.
    for root, replicate in [(1, 0), (7, 3), (2**40 + 5, 999)]:
        expected = int(np.random.SeedSequence(entropy=root, spawn_key=(replicate,)).generate_state(1, np.uint32)[0])
        assert replicate_seed(root, replicate) == expected
        assert replicate_seed(root, replicate, MAIN_STREAM) == expected
    assert replicate_seed(1, 0) == 1641411168  # what run.json of a seed=1 run has always recorded


def test_streams_are_disjoint_and_pure() -> None:
    main = [replicate_seed(11, r, MAIN_STREAM) for r in range(2000)]
    search = [replicate_seed(11, r, SEARCH_STREAM) for r in range(2000)]
    assert not set(main) & set(search)
    replicate_seed.cache_clear()  # a pure function: recomputed, the same values
    assert [replicate_seed(11, r, SEARCH_STREAM) for r in range(2000)] == search
    assert seed_stream("optimize") == SEARCH_STREAM
    assert seed_stream("run") == seed_stream("apply") == MAIN_STREAM
    assert stream_root_seed(11, MAIN_STREAM) == 11 and stream_root_seed(11, SEARCH_STREAM) != 11


def test_optimize_and_run_draw_from_different_streams() -> None:
    experiment = build()
    best = optimize(experiment)
    searched = experiment.last_optimization
    confirmed = experiment.run(treatments=[best])

    assert searched.provenance["seed_stream"] == SEARCH_STREAM
    assert confirmed.provenance["seed_stream"] == MAIN_STREAM
    search_seeds = {s for tm in searched.metrics.treatments.values() for s in tm.metrics["seed"]}
    run_seeds = set(confirmed.metrics.baseline.metrics["seed"])
    assert search_seeds == {replicate_seed(7, r, SEARCH_STREAM) for r in range(REPLICATES)}
    assert run_seeds == {replicate_seed(7, r, MAIN_STREAM) for r in range(REPLICATES)}
    assert not search_seeds & run_seeds
    # Every candidate of the search saw the same replicates (common random numbers within the search).
    per_candidate = [tuple(tm.metrics["seed"]) for tm in searched.metrics.treatments.values()]
    assert len(set(per_candidate)) == 1

    # The stream is in the stored plan and run record.
    for result in (searched, confirmed):
        folder = Path("data") / "streams" / f"v{result.provenance['version']}"
        plan = json.loads((folder / "plan.json").read_text())
        record = json.loads((folder / "run.json").read_text())
        assert plan["seed_stream"] == record["provenance"]["seed_stream"] == result.provenance["seed_stream"]


def test_auto_seed_off_still_keeps_the_search_apart() -> None:
    experiment = build(auto_seed=False)
    optimize(experiment)
    searched = experiment.last_optimization
    confirmed = experiment.run()
    assert set(confirmed.metrics.baseline.metrics["seed"]) == {7}  # auto_seed=False: the root seed, as before
    assert {s for tm in searched.metrics.treatments.values() for s in tm.metrics["seed"]} == {
        stream_root_seed(7, SEARCH_STREAM)
    }


def test_run_after_optimize_equals_run_in_a_fresh_process(tmp_path: Path) -> None:
    experiment = build()
    optimize(experiment)
    in_process = experiment.run().metrics.treatments["shift"].metrics["score"]

    script = tmp_path / "fresh.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_seed_streams import build
            print(json.dumps(build().run().metrics.treatments["shift"].metrics["score"]))
            """
        )
    )
    fresh = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout.strip().splitlines()[-1]) == in_process


@pytest.mark.parametrize("kind", ["serial", "ray"])
def test_search_seeds_are_the_same_on_every_executor(kind: str, request: pytest.FixtureRequest) -> None:
    execution = None
    if kind == "ray":
        request.getfixturevalue("ray_session")
        from crystallize_ray import RayExecution

        execution = RayExecution()
    experiment = build(execution=execution)
    best = optimize(experiment)
    searched = experiment.last_optimization
    scores = {name: tm.metrics["score"] for name, tm in searched.metrics.treatments.items()}
    reference = build()
    reference_best = optimize(reference)
    expected = {name: tm.metrics["score"] for name, tm in reference.last_optimization.metrics.treatments.items()}
    assert scores == expected
    assert dict(best.apply_map) == dict(reference_best.apply_map)


@pipeline_step(cacheable=True)
def cached_noise(data, ctx):
    ctx.metrics.add("cached", float(ctx.rng.normal() + np.random.normal()))
    return data


def test_the_step_cache_never_hands_the_search_values_to_the_confirming_run(monkeypatch, tmp_path: Path) -> None:
    """A cacheable step drawing from ctx.rng and numpy.random: after optimize() filled the cache, run()
    computes its own replicates (other seeds), equal to a run that never saw the search."""

    def experiment(name: str) -> Experiment:
        return Experiment(
            datasource=noise(),
            pipeline=Pipeline([cached_noise(), score()]),
            replicates=REPLICATES,
            plugins=[SeedPlugin(seed=7)],
            name=name,
        )

    monkeypatch.setenv("CRYSTALLIZE_CACHE_DIR", str(tmp_path / "cache"))
    searched = experiment("cached")
    grid = GridSearchOptimizer({"delta": [0.0, 1.0]}, Objective("score", "minimize"))
    searched.optimize(grid, num_trials=2, replicates_per_trial=REPLICATES)
    steps = searched.last_optimization.provenance["steps"]
    assert sum(by_step["cached_noise"]["cache_hits"] for by_step in steps.values()) == REPLICATES  # the cache is on
    search_values = {v for tm in searched.last_optimization.metrics.treatments.values() for v in tm.metrics["cached"]}
    confirmed = searched.run().metrics.baseline.metrics["cached"]
    assert not search_values & set(confirmed)

    monkeypatch.setenv("CRYSTALLIZE_NO_CACHE", "1")
    assert experiment("uncached").run().metrics.baseline.metrics["cached"] == confirmed
