"""Plugins: hook order, defaults, legacy execution loops, seeding, artifact storage, serialization."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import crystallize
from crystallize import (
    ArtifactPlugin,
    BasePlugin,
    ExecutionPlugin,
    Experiment,
    GridSearchOptimizer,
    LoggingPlugin,
    Objective,
    ParallelExecution,
    Pipeline,
    PipelineStep,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    pipeline_step,
)

# ---------------------------------------------------------------- module-level parts


@data_source
def noisy_source(ctx):
    return [random.random(), float(np.random.random())]


@pipeline_step
def step_one(data, ctx):
    return data


@pipeline_step
def step_two(data, ctx):
    ctx.metrics.add("total", float(sum(data)))
    ctx.metrics.add("rep", ctx["replicate"])
    return data


@pipeline_step
def scaled(data, ctx, *, scale=1.0):
    ctx.metrics.add("scaled", scale * float(sum(data)))
    return data


@pipeline_step
def save_artifact(data, ctx):
    ctx.artifacts.add("note.txt", f"{ctx['replicate']}")
    return data


class Recorder(BasePlugin):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def init_hook(self, experiment):
        self.calls.append(("init_hook",))

    def before_run(self, experiment):
        self.calls.append(("before_run",))

    def before_replicate(self, experiment, ctx):
        self.calls.append(("before_replicate", ctx["condition"], ctx["replicate"]))

    def before_step(self, experiment, step):
        self.calls.append(("before_step", step.name))

    def after_step(self, experiment, step, data, ctx):
        self.calls.append(("after_step", step.name))

    def after_run(self, experiment, result):
        self.calls.append(("after_run", result.metrics.baseline.metrics.get("rep")))


MODEL_BUILDS: list[int] = []
TEARDOWNS: list[int] = []


class ModelStep(PipelineStep):
    """Builds a 'model' in setup and puts it in the context for every replicate."""

    def setup(self, ctx):
        MODEL_BUILDS.append(1)
        ctx.add("model", {"weight": 3.0})

    def teardown(self, ctx):
        TEARDOWNS.append(1)

    def __call__(self, data, ctx):
        ctx.metrics.add("model_weight", ctx["model"]["weight"])
        ctx.metrics.add("score", ctx["model"]["weight"] * ctx.get("scale", 1.0))
        return data


class LegacyLoop(BasePlugin):
    def __init__(self) -> None:
        self.called = 0

    def run_experiment_loop(self, experiment, replicate_fn):
        self.called += 1
        return [replicate_fn(i) for i in range(experiment.replicates)]


class AsyncLegacyLoop(BasePlugin):
    def __init__(self) -> None:
        self.called = 0

    async def run_experiment_loop(self, experiment, replicate_fn):
        self.called += 1
        return [replicate_fn(i) for i in range(experiment.replicates)]


class LockStep(PipelineStep):
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, data, ctx):
        return data


SEEN_SEEDS: list[int] = []


def recording_seed_fn(seed: int) -> None:
    SEEN_SEEDS.append(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def serial() -> SerialExecution:
    return SerialExecution(progress=False)


# ---------------------------------------------------------------- hooks


def test_hook_order_under_serial_execution():
    recorder = Recorder()
    exp = Experiment(
        noisy_source(),
        Pipeline([step_one(), step_two()]),
        [recorder, serial()],
        name="hooks",
        replicates=2,
    )
    assert recorder.calls == [("init_hook",)]
    exp.run()
    per_replicate = lambda rep: [  # noqa: E731
        ("before_replicate", "baseline", rep),
        ("before_step", "step_one"),
        ("after_step", "step_one"),
        ("before_step", "step_two"),
        ("after_step", "step_two"),
    ]
    assert recorder.calls == [
        ("init_hook",),
        ("before_run",),
        *per_replicate(0),
        *per_replicate(1),
        ("after_run", [0, 1]),
    ]


def test_optimize_calls_before_and_after_run_once():
    recorder = Recorder()
    exp = Experiment(noisy_source(), Pipeline([step_one(), step_two(), scaled()]), [recorder, serial()], name="o")
    optimizer = GridSearchOptimizer({"scale": [1.0, 2.0, 3.0]}, Objective("scaled"), batch_size=1)
    exp.optimize(optimizer, num_trials=3)
    names = [c[0] for c in recorder.calls]
    assert names.count("init_hook") == 1
    assert names.count("before_run") == 1
    assert names.count("after_run") == 1
    assert names.count("before_replicate") == 3
    assert names[1] == "before_run" and names[-1] == "after_run"


# ---------------------------------------------------------------- defaults


def test_default_plugins_are_attached():
    exp = Experiment(noisy_source(), Pipeline([step_two()]))
    kinds = [type(p) for p in exp.plugins]
    for cls in (ArtifactPlugin, SeedPlugin, LoggingPlugin):
        assert kinds.count(cls) == 1, kinds
    assert isinstance(exp.get_plugin(ExecutionPlugin), SerialExecution)
    result = exp.run()
    assert result.provenance["executor"]["executor"] == "serial"
    assert result.metrics.baseline.metrics["rep"] == [0]


def test_user_seed_plugin_replaces_default():
    mine = SeedPlugin(seed=7)
    exp = Experiment(noisy_source(), Pipeline([step_two()]), [mine])
    seeds = [p for p in exp.plugins if isinstance(p, SeedPlugin)]
    assert seeds == [mine]
    assert seeds[0] is mine
    assert exp.run().provenance["root_seed"] == 7


def test_user_execution_plugin_wins():
    parallel = ParallelExecution(max_workers=1, executor_type="thread", progress=False)
    exp = Experiment(noisy_source(), Pipeline([step_two()]), [parallel])
    assert [p for p in exp.plugins if isinstance(p, ExecutionPlugin)] == [parallel]
    assert exp.run().provenance["executor"]["executor"] == "thread"


# ---------------------------------------------------------------- step setup / teardown


def test_setup_context_key_across_runs_and_optimize():
    MODEL_BUILDS.clear()
    TEARDOWNS.clear()
    exp = Experiment(noisy_source(), Pipeline([ModelStep()]), [serial()], name="setup", replicates=3)
    first = exp.run()
    assert not first.errors
    assert first.metrics.baseline.metrics["model_weight"] == [3.0, 3.0, 3.0]
    assert (len(MODEL_BUILDS), len(TEARDOWNS)) == (1, 1)

    second = exp.run(treatments=[Treatment("t", {"scale": 2.0})])
    assert not second.errors
    assert second.metrics.treatments["t"].metrics["score"] == [6.0, 6.0, 6.0]
    assert (len(MODEL_BUILDS), len(TEARDOWNS)) == (2, 2)

    optimizer = GridSearchOptimizer({"scale": [1.0, 0.5, 4.0]}, Objective("score", "maximize"), batch_size=1)
    best = exp.optimize(optimizer, num_trials=3, replicates_per_trial=2)
    assert best.apply_map["scale"] == 4.0
    assert not exp.last_optimization.errors
    assert (len(MODEL_BUILDS), len(TEARDOWNS)) == (3, 3)
    # the key stays out of the experiment's own initial context
    assert "model" not in exp.initial_ctx


def test_setup_context_key_under_process_execution():
    exp = Experiment(
        noisy_source(),
        Pipeline([ModelStep()]),
        [ParallelExecution(max_workers=2, executor_type="process", progress=False)],
        name="setup_proc",
        replicates=3,
    )
    for _ in range(2):
        result = exp.run()
        assert not result.errors
        assert result.metrics.baseline.metrics["model_weight"] == [3.0, 3.0, 3.0]


# ---------------------------------------------------------------- legacy run_experiment_loop


@pytest.mark.parametrize("loop_cls", [LegacyLoop, AsyncLegacyLoop])
def test_legacy_run_experiment_loop(loop_cls):
    loop = loop_cls()
    steps = [step_one(), step_two(), scaled()]
    treatments = [Treatment("double", {"scale": 2.0})]
    exp = Experiment(
        noisy_source(), Pipeline(steps), [SeedPlugin(seed=5), loop], name="legacy", treatments=treatments, replicates=3
    )
    result = exp.run()
    reference = Experiment(
        noisy_source(), Pipeline(steps), [SeedPlugin(seed=5), serial()], name="ref", treatments=treatments, replicates=3
    ).run()
    assert loop.called == 1
    assert not result.errors
    assert result.metrics.baseline.metrics["rep"] == [0, 1, 2]
    assert result.metrics.baseline.metrics == reference.metrics.baseline.metrics
    assert result.metrics.treatments["double"].metrics == reference.metrics.treatments["double"].metrics
    assert result.metrics.treatments["double"].metrics["scaled"] == [
        2 * v for v in result.metrics.baseline.metrics["total"]
    ]


# ---------------------------------------------------------------- seeding


def test_unseeded_run_records_root_seed_and_is_reproducible():
    steps = [step_one(), step_two()]
    first = Experiment(noisy_source(), Pipeline(steps), [SeedPlugin(seed=None), serial()], name="a", replicates=3).run()
    root = first.provenance["root_seed"]
    assert isinstance(root, int)
    again = Experiment(noisy_source(), Pipeline(steps), [SeedPlugin(seed=root), serial()], name="b", replicates=3).run()
    assert again.provenance["root_seed"] == root
    assert again.metrics.baseline.metrics["total"] == first.metrics.baseline.metrics["total"]
    assert again.provenance["seeds"] == first.provenance["seeds"]


def test_unseeded_runs_draw_fresh_root_seeds():
    exp = Experiment(noisy_source(), Pipeline([step_two()]), [SeedPlugin(), serial()], name="fresh", replicates=2)
    roots = {exp.run().provenance["root_seed"] for _ in range(3)}
    assert len(roots) == 3


def test_seed_fn_called_with_each_replicate_seed():
    SEEN_SEEDS.clear()
    plugin = SeedPlugin(seed=11, seed_fn=recording_seed_fn)
    exp = Experiment(
        noisy_source(),
        Pipeline([step_two()]),
        [plugin, serial()],
        name="seedfn",
        treatments=[Treatment("t", {})],
        replicates=3,
    )
    result = exp.run()
    seeds = result.provenance["seeds"]
    assert SEEN_SEEDS == [
        seeds["baseline"][0],
        seeds["t"][0],
        seeds["baseline"][1],
        seeds["t"][1],
        seeds["baseline"][2],
        seeds["t"][2],
    ]
    assert len(set(SEEN_SEEDS)) == 3
    # the custom seed function seeds the same generators, so the totals match the default seeding
    reference = Experiment(
        noisy_source(), Pipeline([step_two()]), [SeedPlugin(seed=11), serial()], name="ref", replicates=3
    ).run()
    assert result.metrics.baseline.metrics["total"] == reference.metrics.baseline.metrics["total"]


def test_auto_seed_false_uses_root_seed_everywhere():
    exp = Experiment(
        noisy_source(),
        Pipeline([step_two()]),
        [SeedPlugin(seed=42, auto_seed=False), serial()],
        name="noauto",
        replicates=3,
    )
    result = exp.run()
    assert result.provenance["seeds"]["baseline"] == [42, 42, 42]
    assert len(set(result.metrics.baseline.metrics["total"])) == 1


# ---------------------------------------------------------------- artifacts on disk


def test_artifact_plugin_writes_run_record_and_metrics():
    exp = Experiment(
        noisy_source(),
        Pipeline([save_artifact(), step_two()]),
        [SeedPlugin(seed=1), serial()],
        name="store",
        treatments=[Treatment("t", {})],
        replicates=2,
    )
    result = exp.run()
    run_dir = Path("data") / "store" / "v0"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["experiment"] == "store"
    assert record["version"] == 0
    assert record["provenance"]["root_seed"] == 1
    assert {e["name"] for e in record["artifacts"]["t"]} == {"note.txt"}
    table = pq.read_table(run_dir / "metrics.parquet")
    assert table.column_names == ["condition", "replicate", "metric", "value"]
    assert table.num_rows == result.to_arrow().num_rows == 2 * 2 * 2
    loaded_version, loaded = crystallize.plugins.load_metrics_table(Path("data") / "store")
    assert loaded_version == 0
    assert loaded.equals(table)


def test_artifact_retention_keeps_newest_versions():
    exp = Experiment(
        noisy_source(),
        Pipeline([save_artifact(), step_two()]),
        [ArtifactPlugin(artifact_retention=2), serial()],
        name="keep",
    )
    for _ in range(4):
        exp.run()
    versions = sorted(p.name for p in (Path("data") / "keep").iterdir())
    assert versions == ["v2", "v3"]
    assert (Path("data") / "keep" / "v3" / "run.json").is_file()
    assert (Path("data") / "keep" / "v3" / "replicate_0" / "baseline" / "save_artifact" / "note.txt").is_file()


def test_unversioned_artifact_plugin_reuses_v0():
    exp = Experiment(
        noisy_source(),
        Pipeline([save_artifact(), step_two()]),
        [ArtifactPlugin(versioned=False), serial()],
        name="flat",
    )
    exp.run()
    exp.run()
    assert sorted(p.name for p in (Path("data") / "flat").iterdir()) == ["v0"]


# ---------------------------------------------------------------- execution plugins


def test_parallel_execution_rejects_unknown_executor_type():
    with pytest.raises(ValueError, match="bogus"):
        ParallelExecution(executor_type="bogus")
    with pytest.raises(ValueError):
        ParallelExecution(max_workers=0)


def test_unpicklable_step_under_process_names_step():
    exp = Experiment(
        noisy_source(),
        Pipeline([LockStep(), step_two()]),
        [ParallelExecution(max_workers=2, executor_type="process", progress=False)],
        name="lock",
    )
    with pytest.raises(crystallize.SerializationError) as info:
        exp.run()
    message = str(info.value)
    assert "LockStep" in message
    assert "resource_factory" in message
    # the same experiment runs fine in-process
    exp_serial = Experiment(noisy_source(), Pipeline([LockStep(), step_two()]), [serial()], name="lock2")
    assert not exp_serial.run().errors
