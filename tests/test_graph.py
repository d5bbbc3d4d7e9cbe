"""Artifacts between experiments and ExperimentGraph: ordering, reading the right replicate of the
right run, resume, and running independent experiments side by side on Ray.

Steps append to ``executions.log`` in the test's folder (reached as ``ctx["workdir"]``, absolute,
since process and Ray workers run elsewhere), so executions can be counted across runs.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
import types
from pathlib import Path

import cloudpickle
import pytest
from s3_server import moto_endpoint  # noqa: F401 - fixture for the S3 case

from crystallize import (
    Artifact,
    ArtifactPlugin,
    Experiment,
    ExperimentGraph,
    ExperimentInput,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    ValidationError,
    data_source,
    pipeline_step,
    treatment,
)

EXEC_LOG = "executions.log"
INTERRUPT_FLAG = "interrupt.flag"


# ---------------------------------------------------------------- module-level parts (workers import them)


def _log(ctx, what: str) -> None:
    with open(Path(ctx["workdir"]) / EXEC_LOG, "a") as log:
        log.write(f"{what},{ctx['condition']},{ctx['replicate']}\n")


@data_source
def nothing(ctx):
    return 0


@pipeline_step()
def write_number(data, ctx, *, offset: int = 0):
    _log(ctx, "write")
    ctx.artifacts.add("number", str(ctx["replicate"] + offset))
    return data, {"written": ctx["replicate"] + offset}


@pipeline_step()
def record_read(data, ctx):
    _log(ctx, "read")
    interrupt = Path(ctx["workdir"]) / INTERRUPT_FLAG
    if interrupt.exists() and str(ctx["replicate"]) in interrupt.read_text().split():
        raise KeyboardInterrupt
    if isinstance(data, dict):
        return data, {name: value for name, value in data.items()}
    return data, {"read": data}


@pipeline_step()
def slow(data, ctx, *, seconds: float = 0.4):
    started = time.time()
    time.sleep(seconds)
    return data, {"start": started, "end": time.time()}


def read_int(path: Path) -> int:
    """Loaders receive the artifact's file, as in 0.27."""
    return int(path.read_text())


def executions(workdir: Path, what: str) -> int:
    path = workdir / EXEC_LOG
    return sum(1 for line in path.read_text().splitlines() if line.startswith(what + ",")) if path.exists() else 0


def producer(
    workdir: Path,
    *,
    plugins=(),
    name: str = "producer",
    replicates: int = 4,
    offset: int = 0,
    treatments=(),
) -> tuple[Experiment, Artifact]:
    out = Artifact("number", loader=read_int)
    exp = Experiment(
        datasource=nothing(),
        pipeline=Pipeline([write_number(offset=offset) if offset else write_number()]),  # else a treatment sets it
        plugins=[SeedPlugin(seed=3), *plugins],
        initial_ctx={"workdir": str(workdir)},
        outputs=[out],
        treatments=list(treatments),
        replicates=replicates,
        name=name,
    )
    return exp, out


def consumer(workdir: Path, datasource, *, plugins=(), name: str = "consumer", replicates: int = 4) -> Experiment:
    return Experiment(
        datasource=datasource,
        pipeline=Pipeline([record_read()]),
        plugins=[SeedPlugin(seed=3), *plugins],
        initial_ctx={"workdir": str(workdir)},
        replicates=replicates,
        name=name,
    )


def quiet() -> SerialExecution:
    return SerialExecution(progress=False)


# ---------------------------------------------------------------- reading artifacts


def test_consumer_reads_its_own_replicate_of_the_producers_artifact(execution, _private_workdir: Path) -> None:
    """Producer and consumer on every executor (process and Ray workers get a pickled artifact);
    the producer holds a lock, so it could not travel to a worker with the artifact."""
    prod, out = producer(_private_workdir, plugins=[execution], treatments=[treatment("shifted", {"offset": 100})])
    prod.lock = threading.Lock()
    shifted = Artifact("number", loader=read_int, producer=prod, condition="shifted")
    both = ExperimentInput(base=out, shifted=shifted)
    cons = consumer(_private_workdir, both, plugins=[copy.deepcopy(execution)])

    results = ExperimentGraph(prod, cons).run()

    assert set(results) == {"producer", "consumer"}
    assert results["producer"].failed == 0
    assert results["producer"].metrics.treatments["shifted"].metrics["written"] == [100, 101, 102, 103]
    read = results["consumer"]
    assert read.failed == 0, read.errors
    assert read.metrics.baseline.by_replicate("base") == {0: [0], 1: [1], 2: [2], 3: [3]}
    assert read.metrics.baseline.by_replicate("shifted") == {0: [100], 1: [101], 2: [102], 3: [103]}
    stored = Path("data/producer/v0/replicate_2/shifted/write_number/number")
    assert stored.read_text() == "102"


def test_consumer_reads_the_newest_finished_run(_private_workdir: Path) -> None:
    first, _ = producer(_private_workdir, plugins=[quiet()])
    first.run()
    second, out = producer(_private_workdir, plugins=[quiet()], offset=10)
    second.run()
    # a newer run that never finished (plan, no run.json) must not be read
    Path("data/producer/v2").mkdir()
    Path("data/producer/v2/plan.json").write_text("{}")

    result = consumer(_private_workdir, out, plugins=[quiet()]).run()

    assert result.metrics.baseline.metrics["read"] == [10, 11, 12, 13]
    assert out.pinned_version == 1
    # the pinned version is part of the fingerprint: a consumer run records which producer run it read
    before = out.fingerprint
    Path("data/producer/v2/run.json").write_text("{}")
    out.resolve_inputs()
    assert out.pinned_version == 2 and out.fingerprint != before


def test_consumer_resume_is_refused_after_its_producer_ran_again(_private_workdir: Path) -> None:
    """The pinned producer version is in the consumer's plan (also through ExperimentInput): outcomes read
    from one producer run are never mixed with outcomes read from another."""
    prod, out = producer(_private_workdir, plugins=[quiet()])
    prod.run()
    cons = consumer(_private_workdir, ExperimentInput(a=out), plugins=[quiet()])
    cons.run()
    assert cons.run(strategy="resume").metrics.baseline.metrics["a"] == [0, 1, 2, 3]  # same producer run: fine
    prod.run()  # v1
    with pytest.raises(ValidationError, match="the datasource"):
        cons.run(strategy="resume")
    assert cons.run().metrics.baseline.metrics["a"] == [0, 1, 2, 3] and out.pinned_version == 1


def test_error_when_the_producer_never_ran(_private_workdir: Path) -> None:
    _, out = producer(_private_workdir, plugins=[quiet()])
    cons = consumer(_private_workdir, out, plugins=[quiet()])
    with pytest.raises(ValidationError, match=r"'producer'.*no finished run.*run 'producer' first"):
        cons.run()
    assert executions(_private_workdir, "read") == 0
    orphan = consumer(_private_workdir, Artifact("number"), plugins=[quiet()], name="orphan")
    with pytest.raises(ValidationError, match="artifact 'number' has no producer"):
        orphan.run()


def test_missing_replicate_names_producer_version_replicate_condition_and_artifact(_private_workdir: Path) -> None:
    prod, out = producer(_private_workdir, plugins=[quiet()], replicates=2)
    prod.run()
    result = consumer(_private_workdir, out, plugins=[quiet()], replicates=3).run()
    assert result.metrics.baseline.metrics["read"] == [0, 1]
    error = result.replicate_errors["baseline"][2]
    assert error.exception_type == "ArtifactNotFoundError"
    assert "builtins.FileNotFoundError" in error.exception_types  # still caught as the builtin
    for part in ("'producer'", "v0", "replicate 2", "condition 'baseline'", "artifact 'number'"):
        assert part in error.message
    # in a graph the mismatch is caught before anything runs
    with pytest.raises(ValidationError, match=r"'consumer' runs 3 replicates.*'producer', which runs 2"):
        ExperimentGraph(prod, consumer(_private_workdir, out, plugins=[quiet()], replicates=3)).run()


def test_explicit_step_and_write_helper_with_writer(_private_workdir: Path) -> None:
    out = Artifact("payload.json", writer=lambda v: repr(v).encode(), loader=lambda p: p.read_text())

    @pipeline_step()
    def first(data, ctx):
        ctx.artifacts.add("payload.json", b"from first")
        return data

    @pipeline_step()
    def second(data, ctx):
        out.write(ctx, {"replicate": ctx["replicate"]})
        return data

    prod = Experiment(
        datasource=nothing(),
        pipeline=Pipeline([first(), second()]),
        plugins=[quiet()],
        outputs=[out],
        replicates=2,
        name="two_steps",
    )
    prod.run()
    # both steps wrote the name: without step= the last step of the pipeline wins
    ctx = {"replicate": 1}
    assert out.fetch(ctx) == "{'replicate': 1}"
    early = Artifact("payload.json", producer="two_steps", step="first")
    assert early.fetch(ctx) == b"from first"


def test_artifact_pickles_without_its_producer(_private_workdir: Path) -> None:
    prod, out = producer(_private_workdir, plugins=[quiet()])
    prod.lock = threading.Lock()
    with pytest.raises(TypeError):
        cloudpickle.dumps(prod)
    prod.run()
    out.resolve_inputs()

    copy_ = cloudpickle.loads(cloudpickle.dumps(out))

    assert copy_.producer == "producer" and out.producer is prod
    assert copy_.fingerprint == out.fingerprint
    assert [copy_.fetch({"replicate": r}) for r in range(4)] == [0, 1, 2, 3]


# ---------------------------------------------------------------- graph structure


def test_dependencies_are_inferred_from_artifact_datasources(_private_workdir: Path) -> None:
    prod, out = producer(_private_workdir, plugins=[quiet()])
    other, _ = producer(_private_workdir, plugins=[quiet()], name="other")
    by_name = Artifact("number", producer="other", loader=read_int)
    cons = consumer(_private_workdir, ExperimentInput(a=out, b=by_name), plugins=[quiet()])
    lone = consumer(_private_workdir, nothing(), plugins=[quiet()], name="lone")

    graph = ExperimentGraph.from_experiments([cons, lone, prod, other])

    assert graph.dependencies("consumer") == {"producer", "other"}
    assert graph.dependencies("lone") == set() and graph.dependencies("producer") == set()
    order = graph.order()
    assert order.index("consumer") > max(order.index("producer"), order.index("other"))
    assert by_name.producer is other  # the name was linked to the graph's experiment
    assert "consumer  <- other, producer" in graph.visualize()

    missing = consumer(_private_workdir, Artifact("number", producer="nowhere"), plugins=[quiet()], name="m")
    with pytest.raises(ValidationError, match="no experiment named 'nowhere'"):
        ExperimentGraph.from_experiments([prod, missing])
    with pytest.raises(ValidationError, match="'producer', which is not in the graph"):
        ExperimentGraph.from_experiments([cons, other])


def test_producer_by_name_reads_from_that_experiments_store(_private_workdir: Path) -> None:
    """YAML-style wiring: the consumer names its producer; the graph links it, so the producer's
    own data store (here not the default one) is where the consumer reads."""
    prod, _ = producer(_private_workdir, plugins=[quiet(), ArtifactPlugin(root_dir="elsewhere")], offset=5)
    cons = consumer(_private_workdir, Artifact("number", producer="producer", loader=read_int), plugins=[quiet()])

    results = ExperimentGraph.from_experiments([cons, prod]).run()

    assert results["consumer"].metrics.baseline.metrics["read"] == [5, 6, 7, 8]
    assert Path("elsewhere/producer/v0/run.json").exists() and not Path("data/producer").exists()


def test_cycle_is_reported_with_its_path(_private_workdir: Path) -> None:
    a = consumer(_private_workdir, nothing(), plugins=[quiet()], name="a")
    b = consumer(_private_workdir, nothing(), plugins=[quiet()], name="b")
    c = consumer(_private_workdir, nothing(), plugins=[quiet()], name="c")
    graph = ExperimentGraph(a, b, c).add_dependency("b", "a").add_dependency(c, b).add_dependency(a, "c")
    with pytest.raises(ValidationError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        graph.run()
    assert executions(_private_workdir, "read") == 0
    with pytest.raises(ValidationError, match="cycle: a -> a"):
        ExperimentGraph(a).add_dependency(a, a).order()
    with pytest.raises(ValidationError, match="no experiment named 'd'"):
        graph.add_dependency("d", "a")


def test_from_yaml_builds_the_graph_from_the_config_loader(
    _private_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod, _ = producer(_private_workdir, plugins=[quiet()])
    cons = consumer(_private_workdir, Artifact("number", producer="producer", loader=read_int), plugins=[quiet()])
    seen = []

    def load_experiment_folder(path):
        seen.append(path)
        return [cons, prod]

    fake = types.ModuleType("crystallize.config")
    fake.load_experiment_folder = load_experiment_folder
    monkeypatch.setitem(sys.modules, "crystallize.config", fake)

    graph = ExperimentGraph.from_yaml("experiments")

    assert seen == ["experiments"]
    assert graph.order() == ["producer", "consumer"]
    assert graph.run()["consumer"].metrics.baseline.metrics["read"] == [0, 1, 2, 3]


# ---------------------------------------------------------------- running


def test_results_keyed_by_name_and_serial_graphs_run_one_after_another(_private_workdir: Path) -> None:
    a = consumer(_private_workdir, nothing(), plugins=[quiet()], name="a", replicates=2)
    a.pipeline = Pipeline([slow(seconds=0.05)])
    b = consumer(_private_workdir, nothing(), plugins=[quiet()], name="b", replicates=2)
    b.pipeline = Pipeline([slow(seconds=0.05)])

    results = ExperimentGraph(a, b).run(replicates=3)

    assert list(results) == ["a", "b"]
    ends = {name: max(r.metrics.baseline.metrics["end"]) for name, r in results.items()}
    starts = {name: min(r.metrics.baseline.metrics["start"]) for name, r in results.items()}
    assert all(len(r.metrics.baseline.metrics["start"]) == 3 for r in results.values())
    assert starts["b"] >= ends["a"]


def test_resume_skips_a_complete_producer_and_resumes_an_interrupted_consumer(_private_workdir: Path) -> None:
    prod, out = producer(_private_workdir, plugins=[quiet()])
    cons = consumer(_private_workdir, out, plugins=[quiet()])
    graph = ExperimentGraph(prod, cons)
    (_private_workdir / INTERRUPT_FLAG).write_text("2")
    with pytest.raises(KeyboardInterrupt):
        graph.run()
    assert executions(_private_workdir, "write") == 4
    assert executions(_private_workdir, "read") == 3  # replicates 0, 1, then 2 interrupted
    assert not Path("data/consumer/v0/run.json").exists()

    (_private_workdir / INTERRUPT_FLAG).unlink()
    results = graph.run(strategy="resume")

    assert executions(_private_workdir, "write") == 4  # the producer was complete: skipped
    assert executions(_private_workdir, "read") == 3 + 2  # only replicates 2 and 3 ran again
    assert results["producer"].metrics.baseline.metrics["written"] == [0, 1, 2, 3]
    assert results["producer"].provenance["finished"] is True  # reopened from its records
    assert results["consumer"].metrics.baseline.metrics["read"] == [0, 1, 2, 3]
    assert sorted(p.name for p in Path("data/consumer").iterdir()) == ["v0"]

    # now both are complete: nothing runs at all
    again = graph.run(strategy="resume")
    assert executions(_private_workdir, "write") == 4 and executions(_private_workdir, "read") == 5
    assert again["consumer"].metrics.baseline.metrics["read"] == [0, 1, 2, 3]


def test_resume_reruns_a_producer_whose_outputs_are_missing_and_never_skips_a_changed_one(
    _private_workdir: Path,
) -> None:
    """A missing output that a downstream experiment reads makes its producer run again (a missing output
    nothing reads does not: tests/test_compat_graph.py)."""
    prod, out = producer(_private_workdir, plugins=[quiet()])
    graph = ExperimentGraph(prod, consumer(_private_workdir, out, plugins=[quiet()]))
    graph.run()
    Path("data/producer/v0/replicate_3/baseline/write_number/number").unlink()

    results = graph.run(strategy="resume")

    # every replicate of v0 is recorded as done, so resuming it would redo nothing: a new version runs,
    # and its reader, whose inputs are new, runs as a new version too
    assert executions(_private_workdir, "write") == 8
    assert Path("data/producer/v1/replicate_3/baseline/write_number/number").read_text() == "3"
    assert results["consumer"].metrics.baseline.metrics["read"] == [0, 1, 2, 3]
    assert sorted(p.name for p in Path("data/consumer").iterdir()) == ["v0", "v1"]
    graph.run(strategy="resume")
    assert executions(_private_workdir, "write") == 8  # v1 is complete: skipped
    assert executions(_private_workdir, "read") == 8

    changed, _ = producer(_private_workdir, plugins=[quiet()], offset=1)
    with pytest.raises(ValidationError, match="changed since it ran"):
        ExperimentGraph(changed).run(strategy="resume")  # a changed producer is never skipped
    assert executions(_private_workdir, "write") == 8


def test_independent_experiments_run_side_by_side_on_ray(ray_session, _private_workdir: Path) -> None:
    from crystallize_ray import RayExecution

    def ray() -> RayExecution:
        return RayExecution(progress=False, batch_size=1, max_in_flight=1)

    a = Experiment(
        datasource=nothing(),
        pipeline=Pipeline([slow(seconds=0.4), write_number()]),
        plugins=[ray()],
        initial_ctx={"workdir": str(_private_workdir)},
        outputs=[out := Artifact("number", loader=read_int)],
        replicates=3,
        name="slow_a",
    )
    b = Experiment(
        datasource=nothing(),
        pipeline=Pipeline([slow(seconds=0.4)]),
        plugins=[ray()],
        replicates=3,
        name="slow_b",
    )
    after_a = consumer(_private_workdir, out, plugins=[ray()], name="after_a", replicates=3)
    after_a.pipeline = Pipeline([record_read(), slow(seconds=0.05)])

    results = ExperimentGraph.from_experiments([a, b, after_a]).run()

    def interval(name: str) -> tuple[float, float]:
        metrics = results[name].metrics.baseline.metrics
        return min(metrics["start"]), max(metrics["end"])

    (a_start, a_end), (b_start, b_end), (c_start, _) = interval("slow_a"), interval("slow_b"), interval("after_a")
    # each experiment takes >= 1.2 s (one task in flight at a time); run side by side they overlap
    assert a_end - a_start >= 1.1 and b_end - b_start >= 1.1
    assert max(a_start, b_start) < min(a_end, b_end) - 0.5
    assert c_start >= a_end  # the consumer still waited for its producer
    assert results["after_a"].metrics.baseline.metrics["read"] == [0, 1, 2]


def test_resume_reopens_a_complete_producer_on_a_store_uri_with_options(
    _private_workdir: Path, request: pytest.FixtureRequest
) -> None:
    """The skipped producer is reopened from its store, not from a path glued onto the store's URI."""
    from s3_server import new_bucket

    endpoint = request.getfixturevalue("moto_endpoint")
    root = f"s3://{new_bucket(endpoint)}/data?region=us-east-1"
    prod, out = producer(_private_workdir, plugins=[quiet(), ArtifactPlugin(root_dir=root)])
    cons = consumer(_private_workdir, out, plugins=[quiet(), ArtifactPlugin(root_dir=root)])
    graph = ExperimentGraph(prod, cons)
    graph.run()
    results = graph.run(strategy="resume")
    assert executions(_private_workdir, "write") == 4  # skipped, not run again
    assert results["producer"].provenance["finished"] is True
    assert results["producer"].metrics.baseline.metrics["written"] == [0, 1, 2, 3]
