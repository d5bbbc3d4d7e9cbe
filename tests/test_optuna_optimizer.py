"""``OptunaOptimizer``: Optuna's samplers behind the ask/tell contract (the ``optuna`` extra).

Warnings are errors in this file: Optuna emits ``ExperimentalWarning`` for experimental
arguments and ``UserWarning`` for odd choices, and the adapter uses neither, so none is
expected. Optuna's own log records of level WARNING (CMA-ES falling back to random
sampling, say) are caught by the ``optuna_warnings`` fixture and must not appear either.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip(
    "optuna", reason="the optuna extra is not installed: pip install 'crystallize-ray[optuna]'"
)
pytest.importorskip("cmaes", reason="the optuna extra (cmaes, for CMA-ES) is not installed")

import cloudpickle  # noqa: E402
import numpy as np  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from crystallize import (  # noqa: E402
    Experiment,
    Objective,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    pipeline_step,
)
from crystallize.errors import OptimizerError, ParameterError, ValidationError  # noqa: E402
from crystallize.optimizers_optuna import OptunaOptimizer, to_distributions  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("error"),
    # Ray's own deprecation notices (the suite's ini filter, which "error" would override).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

REPO = Path(__file__).resolve().parents[1]
OPTIMUM = {"x": 3.0, "y": -1.0}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def optuna_warnings() -> Iterator[list[logging.LogRecord]]:
    """Optuna's WARNING log records (its logger does not propagate, so caplog cannot see them)."""
    handler = _Records()
    root = logging.getLogger("optuna")
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


@data_source
def zero(ctx):
    return 0.0


@pipeline_step()
def quadratic(data, ctx, *, x: float = 0.0, y: float = 0.0):
    """A bowl with its bottom at x=3, y=-1, plus a little noise from the replicate's generator."""
    ctx.metrics.add("loss", (x - 3.0) ** 2 + (y + 1.0) ** 2 + float(ctx.rng.normal(0.0, 0.05)))
    return data


@pipeline_step()
def where(data, ctx):
    ctx.metrics.add("pid", os.getpid())
    return data


@pipeline_step()
def fails_right_of_zero(data, ctx, *, x: float = 0.0):
    if x > 0:
        raise ValueError("x must not be positive")
    ctx.metrics.add("loss", (x + 1.0) ** 2)
    return data


def experiment(*steps, execution=None, name: str = "bowl") -> Experiment:
    steps = steps or (quadratic(),)
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline(list(steps)),
        plugins=[SeedPlugin(seed=5), execution or SerialExecution(progress=False)],
        name=name,
    )


def asked(optimizer: OptunaOptimizer) -> list[tuple[int, dict, float | None, str]]:
    """What the study saw, trial by trial: number, parameters, told value, state."""
    return [(t.number, dict(t.params), t.value, t.state.name) for t in optimizer.study.trials]


# ---------------------------------------------------------------------- search space


def test_short_forms_become_optuna_distributions() -> None:
    log_lr = FloatDistribution(1e-4, 1e-1, log=True)
    space = to_distributions(
        {
            "lr": (1e-4, 1e-1, "log"),
            "alpha": (0.0, 1),
            "layers": [1, 2, 3],
            "width": (2, 32, 2),
            "units": (8, 256, "log"),
            "frac": (0.0, 1.0, 0.25),
            "given": log_lr,
            "numpy": (np.int64(1), np.int64(4)),
        }
    )
    assert space == {
        "lr": log_lr,
        "alpha": FloatDistribution(0.0, 1.0),
        "layers": CategoricalDistribution([1, 2, 3]),
        "width": IntDistribution(2, 32, step=2),
        "units": IntDistribution(8, 256, log=True),
        "frac": FloatDistribution(0.0, 1.0, step=0.25),
        "given": log_lr,
        "numpy": IntDistribution(1, 4),
    }
    assert space["given"] is log_lr


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ((5, 1), "'k'"),  # Optuna's own bounds check, named by key
        ((0.0, 1.0, "sqrt"), "'log' or a positive step"),
        ((0.0, 1.0, -0.5), "'log' or a positive step"),
        ((0.0, 1.0, "log"), "'k'"),  # log scale needs low > 0
        ((True, 3), "numbers"),
        (("a", "b"), "numbers"),
        ([object()], "choices must be None, bool, int, float or str"),
        ([], "must be a (low, high"),
        ("abc", "must be a (low, high"),
    ],
)
def test_a_bad_search_space_entry_is_a_validation_error_naming_the_key(entry, says: str) -> None:
    with pytest.raises(ValidationError, match=r"'k'") as info:
        OptunaOptimizer({"k": entry}, Objective("loss"), seed=0)
    assert says in str(info.value)


def test_constructor_arguments_are_checked() -> None:
    space = {"x": (0.0, 1.0)}
    with pytest.raises(ValidationError, match="non-empty mapping"):
        OptunaOptimizer({}, Objective("loss"), seed=0)
    with pytest.raises(ValidationError, match="batch_size"):
        OptunaOptimizer(space, Objective("loss"), seed=0, batch_size=0)
    with pytest.raises(ValidationError, match="sampler must be one of 'tpe', 'cmaes', 'random'"):
        OptunaOptimizer(space, Objective("loss"), sampler="gp", seed=0)
    with pytest.raises(ParameterError, match="give your own sampler its seed"):
        OptunaOptimizer(space, Objective("loss"), sampler=optuna.samplers.TPESampler(seed=1), seed=0)
    with pytest.raises(ValidationError, match=r"numeric ranges only, but \['layers'\].*optuna.samplers.CmaEsSampler"):
        OptunaOptimizer({"x": (0.0, 1.0), "layers": [1, 2]}, Objective("loss"), sampler="cmaes", seed=0)
    maximizing = optuna.create_study(direction="maximize")
    with pytest.raises(ValidationError, match="study's direction is 'maximize' but the objective's is 'minimize'"):
        OptunaOptimizer(space, Objective("loss"), study=maximizing)
    with pytest.raises(ParameterError, match="leave sampler and seed unset"):
        OptunaOptimizer(space, Objective("loss", "maximize"), study=maximizing, seed=0)
    with pytest.raises(ValidationError, match="multi-objective"):
        OptunaOptimizer(space, Objective("loss"), study=optuna.create_study(directions=["minimize", "minimize"]))


# ---------------------------------------------------------------------- ask / tell


def test_ask_names_candidates_by_trial_number_and_tell_reports_by_metric_or_name() -> None:
    opt = OptunaOptimizer({"x": (0.0, 1.0), "n": (1, 4), "kind": ["a", "b"]}, Objective("loss"), seed=0, batch_size=2)
    first = opt.ask()
    assert [t.name for t in first] == ["optuna_0", "optuna_1"]
    for t in first:
        assert list(t.apply_map) == ["x", "n", "kind"]  # the search space's order
        assert type(t.apply_map["x"]) is float and type(t.apply_map["n"]) is int and t.apply_map["kind"] in "ab"
    opt.tell({"optuna_0": 0.5, "optuna_1": 0.25})
    assert [(n, v, s) for n, _, v, s in asked(opt)] == [(0, 0.5, "COMPLETE"), (1, 0.25, "COMPLETE")]
    assert opt.get_best_treatment() is first[1]

    single = OptunaOptimizer({"x": (0.0, 1.0)}, Objective("loss", "maximize"), seed=0)
    (only,) = single.ask()
    single.tell({"loss": 2.0})  # one candidate per ask: keyed by the objective metric
    assert asked(single)[0][2:] == (2.0, "COMPLETE")
    assert single.get_best_treatment() is only


def test_a_missing_or_nan_objective_fails_the_trial() -> None:
    opt = OptunaOptimizer({"x": (0.0, 1.0)}, Objective("loss"), seed=0, batch_size=3)
    with pytest.raises(OptimizerError, match="no candidate has been scored"):
        opt.get_best_treatment()
    with pytest.raises(OptimizerError, match="without a preceding ask"):
        opt.tell({"loss": 1.0})
    a, _missing, c = opt.ask()
    opt.tell({a.name: math.nan, c.name: 4.0})
    assert [s for *_, s in asked(opt)] == ["FAIL", "FAIL", "COMPLETE"]
    assert opt.get_best_treatment() is c
    opt.ask()
    opt.ask()  # the last ask was never told: its trials are failed, not left running
    assert [s for *_, s in asked(opt)] == ["FAIL", "FAIL", "COMPLETE"] + ["FAIL"] * 3 + ["RUNNING"] * 3


def test_trials_queued_on_a_study_of_ones_own_are_asked_first() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"x": 0.75})
    opt = OptunaOptimizer({"x": (0.0, 1.0)}, Objective("loss"), study=study)
    assert [dict(t.apply_map) for t in opt.ask()] == [{"x": 0.75}]
    assert opt.study is study


def test_failed_replicates_fail_their_trial_and_the_best_is_among_the_scored() -> None:
    opt = OptunaOptimizer({"x": (-2.0, 2.0)}, Objective("loss"), sampler="random", seed=1)
    best = experiment(fails_right_of_zero(), name="half_fails").optimize(opt, num_trials=8, replicates_per_trial=2)
    rows = asked(opt)
    assert {s for *_, s in rows} == {"COMPLETE", "FAIL"}
    for _, params, value, state in rows:
        assert (state == "FAIL") == (params["x"] > 0)
        assert (value is None) == (state == "FAIL")
    scored = [(value, params) for _, params, value, state in rows if state == "COMPLETE"]
    assert dict(best.apply_map) == min(scored, key=lambda vp: vp[0])[1]


def test_the_trial_history_lists_the_candidates_as_the_study_saw_them() -> None:
    """``optimizer.history`` (set by ``optimize()``) and ``trials_dataframe()`` agree with Optuna's own record."""
    opt = OptunaOptimizer(
        {"x": (-2.0, 2.0), "kind": ["a", "b"]}, Objective("loss"), sampler="random", seed=1, batch_size=2
    )
    exp = experiment(fails_right_of_zero(), name="history")
    exp.optimize(opt, num_trials=4, replicates_per_trial=2)
    study_rows = asked(opt)
    assert {state for *_, state in study_rows} == {"COMPLETE", "FAIL"}
    assert [(r["trial"], r["candidate"]) for r in opt.history] == [(n // 2, f"optuna_{n}") for n, *_ in study_rows]
    for row, (_, params, value, state) in zip(opt.history, study_rows, strict=True):
        assert row["params"] == params and type(row["params"]["x"]) is float
        assert row["objective"] == value and row["status"] == {"COMPLETE": "complete", "FAIL": "failed"}[state]
        assert row["replicates"] == (2 if state == "COMPLETE" else 0)
    record = exp.last_optimization.provenance["optimization"]
    assert record["optimizer"] == "OptunaOptimizer" and record["objective"] == {
        "metric": "loss",
        "direction": "minimize",
    }
    pytest.importorskip("pandas", reason="trials_dataframe() needs pandas")
    frame = exp.last_optimization.trials_dataframe()
    assert list(frame["candidate"]) == [f"optuna_{n}" for n, *_ in study_rows]
    assert list(frame["param.x"]) == [p["x"] for _, p, *_ in study_rows]
    assert list(frame["param.kind"]) == [p["kind"] for _, p, *_ in study_rows]


# ---------------------------------------------------------------------- finding a known optimum


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_sampler_gets_near_the_known_optimum(sampler: str, optuna_warnings: list) -> None:
    opt = OptunaOptimizer({"x": (-10.0, 10.0), "y": (-5.0, 5.0)}, Objective("loss"), sampler=sampler, seed=0)
    best = experiment().optimize(opt, num_trials=60, replicates_per_trial=2)
    assert best.name.startswith("optuna_")
    for key, target in OPTIMUM.items():
        assert abs(best.apply_map[key] - target) < 0.5, (sampler, dict(best.apply_map))
    # The sampler itself did the search, not a random fallback (no Optuna warning either).
    if sampler == "cmaes":
        assert isinstance(opt.study.sampler, optuna.samplers.CmaEsSampler)
        assert any(k.endswith("generation") for t in opt.study.trials[1:] for k in t.system_attrs)
    else:
        assert isinstance(opt.study.sampler, optuna.samplers.TPESampler)
    assert optuna_warnings == []


def test_the_same_seed_asks_the_same_candidates_and_another_seed_others() -> None:
    def search(seed: int) -> list:
        opt = OptunaOptimizer({"x": (-10.0, 10.0), "y": (-5.0, 5.0)}, Objective("loss"), seed=seed)
        experiment().optimize(opt, num_trials=14, replicates_per_trial=2)
        return asked(opt)

    assert search(7) == search(7)
    assert [p for _, p, *_ in search(7)] != [p for _, p, *_ in search(8)]


# ---------------------------------------------------------------------- every executor


def test_every_executor_asks_the_same_sequence_and_picks_the_same_best(execution) -> None:
    """Batches of two (TPE's constant liar sees one pending trial), past TPE's ten random start-up trials."""

    def search(plugin) -> tuple[list, str, dict]:
        opt = OptunaOptimizer({"x": (-10.0, 10.0), "y": (-5.0, 5.0)}, Objective("loss"), seed=3, batch_size=2)
        best = experiment(execution=plugin, name="everywhere").optimize(opt, num_trials=8, replicates_per_trial=2)
        return asked(opt), best.name, dict(best.apply_map)

    serial = search(SerialExecution(progress=False))
    assert len(serial[0]) == 16 and all(state == "COMPLETE" for *_, state in serial[0])
    assert search(execution) == serial


def test_a_candidate_pickles_and_runs_on_ray(ray_session) -> None:
    from crystallize_ray import RayExecution

    opt = OptunaOptimizer({"x": (-10.0, 10.0), "layers": [1, 2, 3]}, Objective("loss"), seed=0)
    (candidate,) = opt.ask()
    copy = cloudpickle.loads(cloudpickle.dumps(candidate))
    assert isinstance(copy, Treatment) and copy == candidate and dict(copy.apply_map) == dict(candidate.apply_map)

    steps = (quadratic(), where())
    on_ray = experiment(*steps, execution=RayExecution(progress=False), name="on_ray")
    ray_metrics = on_ray.run(treatments=[copy], replicates=3).metrics.treatments[candidate.name].metrics
    here = experiment(*steps, name="here").run(treatments=[candidate], replicates=3)
    losses = ray_metrics["loss"]
    assert losses == here.metrics.treatments[candidate.name].metrics["loss"]
    assert os.getpid() not in ray_metrics["pid"]  # it ran in Ray's workers
    x = candidate.apply_map["x"]
    assert all(abs(v - ((x - 3.0) ** 2 + 1.0)) < 0.5 for v in losses)  # the treatment's x reached the step


# ---------------------------------------------------------------------- the seed document's flow


def test_seed_000_optimize_run_apply_with_optuna_in_place_of_the_grid() -> None:
    from seed_blocks import SEEDS_AVAILABLE, SKIP_REASON

    if not SEEDS_AVAILABLE:
        pytest.skip(SKIP_REASON)
    from test_seeds import SEEDS, run_seed, seed_blocks

    grid = 'optimizer = GridSearchOptimizer({"delta": [-1, 0, 1]}, Objective("total", "minimize"))'
    search = "best_treatment = exp.optimize(optimizer, num_trials=3, replicates_per_trial=5)"
    code = "\n".join(seed_blocks(SEEDS["000"]))
    assert grid in code and search in code  # else the replacement below would silently test the grid
    ns = run_seed(
        "000",
        {
            grid: (
                "from crystallize.optimizers_optuna import OptunaOptimizer\n"
                'optimizer = OptunaOptimizer({"delta": (-1.0, 1.0)}, Objective("total", "minimize"), seed=0)'
            ),
            search: search.replace("num_trials=3", "num_trials=15"),
        },
    )
    best = ns["best_treatment"]
    assert isinstance(ns["optimizer"], OptunaOptimizer) and len(ns["optimizer"].study.trials) == 15
    # total = 3 * delta + noise in [0, 3): the bottom of the range wins.
    assert best.name.startswith("optuna_") and best.apply_map["delta"] < -0.5
    verdict = ns["result"].get_hypothesis("rank_by_p_value").results[best.name]
    assert verdict["p_value"] < 0.05
    output = ns["output"]
    assert len(output) == 3 and all(best.apply_map["delta"] <= x < best.apply_map["delta"] + 1 for x in output)


# ---------------------------------------------------------------------- without the extra


def test_crystallize_imports_without_optuna_and_the_adapter_names_the_extra() -> None:
    script = textwrap.dedent(
        """
        import sys
        import crystallize, crystallize.optimizers_optuna as adapter
        assert "optuna" not in sys.modules, "import crystallize must not import optuna"
        sys.modules["optuna"] = None  # as if the extra were not installed
        try:
            adapter.OptunaOptimizer({"x": (0.0, 1.0)}, crystallize.Objective("loss"), seed=0)
        except ImportError as exc:
            assert isinstance(exc, crystallize.errors.CrystallizeError)
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "crystallize-ray[optuna]" in done.stdout


def test_a_named_sampler_without_a_seed_says_the_search_will_not_repeat(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crystallize.optimizers_optuna"):
        OptunaOptimizer({"x": (0.0, 1.0)}, Objective("loss"))
    assert any("without a seed" in r.getMessage() and "seed=" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crystallize.optimizers_optuna"):
        OptunaOptimizer({"x": (0.0, 1.0)}, Objective("loss"), seed=0)
    assert caplog.records == []


# ---------------------------------------------------------------------- the docs page


def test_the_optuna_page_runs_and_keeps_its_promises(optuna_warnings: list) -> None:
    page = REPO / "docs" / "optuna.md"
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 2
    namespace: dict = {"__name__": "docs_optuna"}
    for code in blocks:
        exec(compile(code, str(page), "exec"), namespace)
    for name in ("best", "cma_best"):  # both samplers near gain 1.25, correction 2.0
        found = namespace[name].apply_map
        assert abs(found["gain"] - 1.25) < 0.1 and abs(found["correction"] - 2.0) < 0.3, (name, dict(found))
    assert namespace["cma"].study.best_value < namespace["tpe"].study.best_value  # "a little closer"
    assert namespace["verdict"]["significant"] is True
    assert abs(float(namespace["np"].mean(namespace["readings"])) - 5.0) < 0.1
    assert "crystallize-ray[optuna]" in text and "(docs/optuna.md)" in (REPO / "README.md").read_text()
    assert optuna_warnings == []
