"""``optimize()`` leaves a trials table: ``optimizer.history``, ``result.trials_dataframe()``, ``show``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
from rich.console import Console

from crystallize import (
    BaseOptimizer,
    Experiment,
    GridSearchOptimizer,
    Objective,
    Pipeline,
    SeedPlugin,
    Treatment,
    data_source,
    pipeline_step,
)
from crystallize.cli.tables import show_run
from crystallize.runs import load_run


@data_source
def base(ctx):
    return 1.0


@pipeline_step()
def score(data, ctx, *, lr: float = 0.0, layers: int = 1):
    if layers == 3:
        raise ValueError("three layers do not fit")  # every replicate fails: no objective
    ctx.metrics.add("loss", (lr - 0.1) ** 2 + layers + ctx["replicate"] / 10)
    return data


def _experiment(name: str) -> Experiment:
    return Experiment(base(), Pipeline([score()]), [SeedPlugin(seed=1)], name=name)


def _grid() -> GridSearchOptimizer:
    return GridSearchOptimizer({"lr": [0.1, 0.5], "layers": [1, 3]}, Objective("loss", "minimize"), batch_size=2)


def test_grid_search_history_has_one_row_per_candidate() -> None:
    experiment = _experiment("grid")
    grid = _grid()
    best = experiment.optimize(grid, num_trials=2, replicates_per_trial=3)
    assert best.name == "grid_0" and dict(best.apply_map) == {"lr": 0.1, "layers": 1}

    history = grid.history
    assert [(row["trial"], row["candidate"], row["params"]) for row in history] == [
        (0, "grid_0", {"lr": 0.1, "layers": 1}),
        (0, "grid_1", {"lr": 0.1, "layers": 3}),
        (1, "grid_2", {"lr": 0.5, "layers": 1}),
        (1, "grid_3", {"lr": 0.5, "layers": 3}),
    ]
    assert [type(row["params"]["layers"]) for row in history] == [int] * 4  # typed, not "1"
    result = experiment.last_optimization
    assert result is not None
    for row in history:
        expected = result.metrics.treatments[row["candidate"]].metrics.get("loss", [])
        if row["params"]["layers"] == 3:
            assert (row["status"], row["objective"], row["replicates"]) == ("failed", None, 0)
        else:
            assert row["status"] == "complete" and row["replicates"] == 3
            assert row["objective"] == math.fsum(expected) / 3
        assert isinstance(row["seconds"], float) and row["seconds"] > 0
    # the candidates of one ask ran side by side and share their trial's wall time
    assert history[0]["seconds"] == history[1]["seconds"] and history[2]["seconds"] == history[3]["seconds"]

    optimization = result.provenance["optimization"]
    assert optimization["objective"] == {"metric": "loss", "direction": "minimize"}
    assert optimization["optimizer"] == "GridSearchOptimizer"
    assert optimization["trials"] == history
    stored = json.loads(Path("data/grid/v0/run.json").read_text())["provenance"]["optimization"]
    assert stored == optimization


def test_trials_dataframe_reads_like_optunas() -> None:
    experiment = _experiment("frame")
    grid = _grid()
    experiment.optimize(grid, num_trials=2, replicates_per_trial=2)
    for result in (experiment.last_optimization, load_run("data/frame/v0")):
        assert result is not None
        frame = result.trials_dataframe()
        assert isinstance(frame, pd.DataFrame)
        assert list(frame.columns) == [
            "trial",
            "candidate",
            "param.lr",
            "param.layers",
            "objective",
            "replicates",
            "seconds",
            "status",
        ]
        assert frame["candidate"].tolist() == ["grid_0", "grid_1", "grid_2", "grid_3"]
        assert frame["param.lr"].tolist() == [0.1, 0.1, 0.5, 0.5]
        assert frame["param.layers"].tolist() == [1, 3, 1, 3]
        assert frame["status"].tolist() == ["complete", "failed", "complete", "failed"]
        assert frame["objective"].isna().tolist() == [False, True, False, True]
        assert frame["replicates"].tolist() == [2, 0, 2, 0]


def test_a_run_has_an_empty_trials_table() -> None:
    result = _experiment("plain").run(treatments=[Treatment("t", {"lr": 0.2})])
    assert "optimization" not in result.provenance
    frame = result.trials_dataframe()
    assert frame.empty and list(frame.columns) == ["trial", "candidate", "objective", "replicates", "seconds", "status"]


class BareOptimizer(BaseOptimizer):
    """A user optimizer that never calls ``BaseOptimizer.__init__``."""

    def __init__(self) -> None:
        self.objective = Objective("loss", "minimize")
        self.asked = 0

    def ask(self) -> list[Treatment]:
        self.asked += 1
        return [Treatment(f"lr{self.asked}", {"lr": 0.1 * self.asked})] if self.asked <= 2 else []

    def tell(self, objective_values: dict[str, float]) -> None:
        self.last = objective_values

    def get_best_treatment(self) -> Treatment:
        return Treatment("lr1", {"lr": 0.1})


def test_history_of_an_optimizer_that_skips_base_init() -> None:
    optimizer = BareOptimizer()
    assert optimizer.history == []
    _experiment("bare").optimize(optimizer, num_trials=5)
    assert [(row["trial"], row["candidate"], row["status"]) for row in optimizer.history] == [
        (0, "lr1", "complete"),
        (1, "lr2", "complete"),
    ]


class KeepsItsOwnHistory(BaseOptimizer):
    """A 0.27-style optimizer whose own bookkeeping is called ``history`` and decides the winner."""

    def __init__(self) -> None:
        super().__init__(Objective("loss", "minimize"))
        self.history: list[tuple[str, float]] = []
        self.asked = 0

    def ask(self) -> list[Treatment]:
        self.asked += 1
        return [Treatment(f"lr{self.asked}", {"lr": 0.1 * self.asked})] if self.asked <= 2 else []

    def tell(self, objective_values: dict[str, float]) -> None:
        self.history.append((f"lr{self.asked}", objective_values["loss"]))

    def get_best_treatment(self) -> Treatment:
        name, _ = min(self.history, key=lambda item: item[1])
        return Treatment(name, {"lr": 0.1 * int(name[2:])})


def test_an_optimizers_own_history_is_left_alone() -> None:
    optimizer = KeepsItsOwnHistory()
    experiment = _experiment("own")
    best = experiment.optimize(optimizer, num_trials=5)
    assert [name for name, _ in optimizer.history] == ["lr1", "lr2"]  # its own tuples, nothing of ours mixed in
    assert all(isinstance(score, float) for _, score in optimizer.history)
    assert best.name == "lr1"
    trials = experiment.last_optimization.trials_dataframe()  # the rows still reach the result
    assert list(trials["candidate"]) == ["lr1", "lr2"]


def test_show_lists_the_trials_of_an_optimize_run() -> None:
    experiment = _experiment("shown")
    experiment.optimize(_grid(), num_trials=2, replicates_per_trial=2)
    buffer = io.StringIO()
    show_run(Console(file=buffer, width=200, color_system=None), load_run("data/shown/v0"), "data/shown/v0")
    text = buffer.getvalue()
    assert "trials (GridSearchOptimizer, minimize loss)" in text
    lines = {
        line.split()[3]: line
        for line in text.splitlines()
        if "grid_" in line and ("complete" in line or "failed" in line)
    }
    assert set(lines) == {"grid_0", "grid_1", "grid_2", "grid_3"}
    assert "(best)" in lines["grid_0"] and "0.1" in lines["grid_0"] and "complete" in lines["grid_0"]
    assert "failed" in lines["grid_1"] and "\u2014" in lines["grid_1"]
