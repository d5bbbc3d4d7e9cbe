"""``Experiment.optimize``: ask/tell search over treatments, built-in grid and random search."""

from __future__ import annotations

import math
import random

import pytest

from crystallize import (
    BaseOptimizer,
    Experiment,
    GridSearchOptimizer,
    Objective,
    Pipeline,
    RandomSearchOptimizer,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    exit_step,
    pipeline_step,
)

# ---------------------------------------------------------------- module-level parts (seed 000's machine)


@data_source
def numbers(ctx):
    ctx.metrics.add("fetched_for", ctx["condition"])
    return [0, 0, 0]


@pipeline_step()
def add_delta(data, ctx, *, delta: float = 0.0):
    return [x + delta for x in data]


@pipeline_step()
def add_noise(data, ctx):
    return [x + random.random() for x in data]


@pipeline_step()
def record_sum(data, ctx):
    ctx.metrics.add("total", sum(data))
    ctx.metrics.add("rep", ctx["replicate"])
    ctx.metrics.add("seed", ctx["seed_used"])
    return data


class SeedGridSearchOptimizer(BaseOptimizer):
    """The custom optimizer of seed 000, plus a record of what ``tell`` received."""

    def __init__(self, grid: dict, objective: Objective):
        super().__init__(objective)
        self.grid = grid
        self.index = 0
        self.results: list[float] = []
        self.told: list[dict[str, float]] = []

    def ask(self) -> list[Treatment]:
        val = self.grid["delta"][self.index]
        return [Treatment(name=f"trial_{val}", apply={"delta": val})]

    def tell(self, values: dict[str, float]) -> None:
        self.told.append(dict(values))
        self.results.append(list(values.values())[0])  # noqa: RUF015 - verbatim from seed 000
        self.index += 1

    def get_best_treatment(self) -> Treatment:
        best_value = min(self.results)
        best_index = self.results.index(best_value)
        delta = self.grid["delta"][best_index]
        return Treatment(name="best_delta", apply={"delta": delta})


class RecordingGrid(GridSearchOptimizer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[list[str]] = []
        self.told: list[dict[str, float]] = []

    def ask(self):
        batch = super().ask()
        self.asked.append([t.name for t in batch])
        return batch

    def tell(self, objective_values):
        self.told.append(dict(objective_values))
        super().tell(objective_values)


def machine(plugins=None, **kwargs) -> Experiment:
    if plugins is None:
        plugins = [SeedPlugin(seed=0), SerialExecution(progress=False)]
    kwargs.setdefault("name", "machine")
    return Experiment(
        datasource=numbers(),
        pipeline=Pipeline([add_delta(), add_noise(), exit_step(record_sum())]),
        plugins=plugins,
        **kwargs,
    )


def mean(values):
    return math.fsum(values) / len(values)


# ---------------------------------------------------------------- tests


def test_seed_custom_grid_optimizer():
    exp = machine()
    optimizer = SeedGridSearchOptimizer({"delta": [-1, 0, 1]}, Objective("total", "minimize"))
    best = exp.optimize(optimizer, num_trials=3, replicates_per_trial=5)

    assert isinstance(best, Treatment)
    assert best.apply_map["delta"] == -1
    assert len(optimizer.told) == 3
    assert all(list(told) == ["total"] for told in optimizer.told)
    run = exp.last_optimization
    assert run is not None
    for told, val in zip(optimizer.told, [-1, 0, 1], strict=True):
        totals = run.metrics.treatments[f"trial_{val}"].metrics["total"]
        assert len(totals) == 5
        assert told["total"] == pytest.approx(mean(totals))
    # noise is in [0, 3), so each delta step moves the mean by 3
    assert optimizer.results[0] < optimizer.results[1] < optimizer.results[2]

    # the seed workflow goes on: validate with run(), then apply()
    result = exp.run(treatments=[best], replicates=3)
    assert not result.errors
    assert mean(result.metrics.treatments["best_delta"].metrics["total"]) < mean(
        result.metrics.baseline.metrics["total"]
    )
    output = exp.apply(treatment=best)
    assert len(output) == 3 and all(-1 <= x < 0 for x in output)


def test_builtin_grid_batches_and_tells_by_name():
    exp = machine()
    optimizer = RecordingGrid({"delta": [3, 1, -2, 0, 2]}, Objective("total", "minimize"), batch_size=3)
    best = exp.optimize(optimizer, num_trials=2, replicates_per_trial=2)

    assert optimizer.asked == [["grid_0", "grid_1", "grid_2"], ["grid_3", "grid_4"]]
    assert [sorted(t) for t in optimizer.told] == optimizer.asked
    run = exp.last_optimization
    for told in optimizer.told:
        for name, value in told.items():
            assert value == pytest.approx(mean(run.metrics.treatments[name].metrics["total"]))
    assert best.name == "grid_2"
    assert best.apply_map == {"delta": -2}
    assert len(optimizer.history) == 5


@pytest.mark.parametrize(("direction", "expected"), [("minimize", -2), ("maximize", 3)])
def test_direction_is_honoured(direction, expected):
    exp = machine()
    optimizer = GridSearchOptimizer({"delta": [0, 3, -2, 1]}, Objective("total", direction), batch_size=2)
    best = exp.optimize(optimizer, num_trials=2)
    assert best.apply_map["delta"] == expected


def test_objective_validation():
    with pytest.raises(ValueError):
        Objective("total", "sideways")
    with pytest.raises(TypeError):
        Objective(["a", "b"])  # type: ignore[arg-type]
    assert Objective("x", "minimize").better(1.0, 2.0)
    assert Objective("x", "maximize").better(2.0, 1.0)
    assert not Objective("x").better(float("nan"), 1.0)


def test_optimize_does_not_run_baseline():
    exp = machine(treatments=[Treatment("configured", {"delta": 5})])
    optimizer = GridSearchOptimizer({"delta": [0, 1]}, Objective("total"), batch_size=1)
    exp.optimize(optimizer, num_trials=2, replicates_per_trial=3)
    run = exp.last_optimization
    assert run.metrics.baseline.metrics == {}
    assert set(run.metrics.treatments) == {"grid_0", "grid_1"}
    fetched = [v for _, tm in run.metrics.conditions() for v in tm.metrics.get("fetched_for", [])]
    assert sorted(fetched) == ["grid_0"] * 3 + ["grid_1"] * 3
    assert "baseline" not in run.provenance["seeds"]
    assert run.provenance["mode"] == "optimize"


def test_random_search_is_reproducible():
    space = {"delta": (-2.0, 2.0), "k": [1, 2, 3], "n": (0, 10)}

    def search():
        exp = machine()
        optimizer = RandomSearchOptimizer(space, Objective("total"), num_samples=5, batch_size=2, seed=9)
        best = exp.optimize(optimizer, num_trials=10, replicates_per_trial=2)
        return best, [(row["candidate"], row["params"], row["objective"]) for row in optimizer.history]

    best_a, history_a = search()
    best_b, history_b = search()
    assert history_a == history_b
    assert best_a == best_b
    assert len(history_a) == 5  # num_samples caps the search before num_trials
    for _, params, _ in history_a:
        assert -2.0 <= params["delta"] <= 2.0
        assert params["k"] in (1, 2, 3)
        assert isinstance(params["n"], int) and 0 <= params["n"] <= 10
    other = RandomSearchOptimizer(space, Objective("total"), batch_size=5, seed=10).ask()
    assert [dict(t.apply_map) for t in other] != [params for _, params, _ in history_a]


def test_exhausted_grid_ends_search_early():
    exp = machine()
    optimizer = RecordingGrid({"delta": [1, 0]}, Objective("total"), batch_size=1)
    best = exp.optimize(optimizer, num_trials=10)
    assert optimizer.asked == [["grid_0"], ["grid_1"], []]
    assert len(optimizer.told) == 2
    assert best.apply_map == {"delta": 0}
    assert set(exp.last_optimization.metrics.treatments) == {"grid_0", "grid_1"}


def test_trials_share_replicate_indices_and_seeds():
    exp = machine()
    optimizer = GridSearchOptimizer({"delta": [0, 1, 2]}, Objective("total"), batch_size=1)
    exp.optimize(optimizer, num_trials=3, replicates_per_trial=3)
    run = exp.last_optimization
    seeds = run.provenance["seeds"]
    assert set(seeds) == {"grid_0", "grid_1", "grid_2"}
    first = seeds["grid_0"]
    assert len(first) == 3
    assert len(set(first)) == 3
    assert all(s == first for s in seeds.values())
    for tm in run.metrics.treatments.values():
        assert tm.metrics["rep"] == [0, 1, 2]
        assert tm.metrics["seed"] == [first[r] for r in range(3)]
    # common random numbers: the noise is the same, only delta differs
    totals = [run.metrics.treatments[f"grid_{i}"].metrics["total"] for i in range(3)]
    for a, b in zip(totals[0], totals[1], strict=True):
        assert b - a == pytest.approx(3.0)


def test_repeated_treatment_names_get_unique_conditions():
    exp = machine()
    optimizer = SeedGridSearchOptimizer({"delta": [0, 0, 1]}, Objective("total", "minimize"))
    exp.optimize(optimizer, num_trials=3, replicates_per_trial=2)
    assert set(exp.last_optimization.metrics.treatments) == {"trial_0", "trial_0~trial1", "trial_1"}
    assert optimizer.results[0] == pytest.approx(optimizer.results[1])


def test_optimize_under_every_executor(execution):
    reference_opt = RecordingGrid({"delta": [2, -1, 0, 1]}, Objective("total"), batch_size=2)
    reference = machine().optimize(reference_opt, num_trials=2, replicates_per_trial=3)

    exp = machine(plugins=[SeedPlugin(seed=0), execution], name="machine_exec")
    optimizer = RecordingGrid({"delta": [2, -1, 0, 1]}, Objective("total"), batch_size=2)
    best = exp.optimize(optimizer, num_trials=2, replicates_per_trial=3)

    assert best == reference
    assert best.apply_map == {"delta": -1}
    assert optimizer.asked == [["grid_0", "grid_1"], ["grid_2", "grid_3"]]
    assert optimizer.told == reference_opt.told
    run = exp.last_optimization
    assert not run.errors
    for tm in run.metrics.treatments.values():
        assert tm.metrics["rep"] == [0, 1, 2]
    # the experiment still runs normally afterwards
    assert exp.run(replicates=2).metrics.baseline.metrics["rep"] == [0, 1]
