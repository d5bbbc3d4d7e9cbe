"""Artifacts between experiments as Crystallize 0.27 code uses them (issue 11, item 7).

The producer/consumer pairs below are written against 0.27's API: ``Artifact(name, loader,
writer)`` positionally, loaders that receive a ``Path``, ``dest.write(value)`` inside a step that
got the artifact as a parameter, consumers whose treatments read the producer's condition of the
same name, ``Experiment.artifact_datasource(step=...)`` with 0.27's step folder names, and
``.replicates`` on artifacts and ``ExperimentInput``. The expected numbers are what 0.27.0 gives
for the same code. Ours keeps: a consumer asking for more replicates than its producer is an
error (0.27 wraps around silently), and artifacts stay under our step names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from s3_server import moto_endpoint  # noqa: F401 - fixture used by store_root's S3 side

from crystallize import (
    Artifact,
    ArtifactPlugin,
    Experiment,
    ExperimentInput,
    FrozenContext,
    ParallelExecution,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    ValidationError,
    data_source,
    pipeline_step,
    treatment,
)
from crystallize.errors import ArtifactNotFoundError, ContextMutationError, CrystallizeError

# ---------------------------------------------------------------- module-level parts (process workers import them)


@data_source
def numbers(ctx):
    return [1, 2, 3]


@pipeline_step()
def write_values(data, ctx, dest: Artifact, scale: int = 1):
    values = [x * scale + ctx["replicate"] for x in data]
    dest.write(values)  # 0.27: the artifact a step receives is bound to the replicate
    return data, {"sum": sum(values)}


@pipeline_step()
def total(data, ctx):
    return data, {"total": sum(data)}


@pipeline_step()
def describe_path(data, ctx):
    return data, {
        "is_path": isinstance(data, Path),
        "folder": data.parent.name,
        "first": json.loads(data.read_text())[0],
    }


def load_json(path: Path):
    if not isinstance(path, Path):
        raise TypeError(f"a loader receives a Path, got {type(path).__name__}")
    return json.loads(path.read_text())


def dump_json(value) -> bytes:
    return json.dumps(value).encode()


def quiet() -> SerialExecution:
    return SerialExecution(progress=False)


def make_producer(*, plugins=(), replicates: int = 3, name: str = "producer") -> tuple[Experiment, Artifact]:
    out = Artifact("values.json", load_json, dump_json)  # positional loader and writer, as in 0.27
    experiment = Experiment(
        datasource=numbers(),
        pipeline=Pipeline([write_values(dest=out)]),
        treatments=[treatment("big", {"scale": 10})],
        outputs=[out],
        replicates=replicates,
        name=name,
        plugins=[SeedPlugin(seed=1), *plugins],
    )
    return experiment, out


def make_consumer(datasource, *, plugins=(), replicates: int = 3, treatments=(), name: str = "consumer") -> Experiment:
    return Experiment(
        datasource=datasource,
        pipeline=Pipeline([total()]),
        treatments=list(treatments),
        replicates=replicates,
        name=name,
        plugins=[SeedPlugin(seed=1), *plugins],
    )


# ---------------------------------------------------------------- writing and reading


@pytest.mark.parametrize("kind", ["serial", "process"])
def test_step_writes_its_artifact_and_consumer_conditions_read_the_same_named_producer_condition(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def execution():
        return (
            quiet() if kind == "serial" else ParallelExecution(executor_type="process", max_workers=2, progress=False)
        )

    prod, out = make_producer(plugins=[execution()])
    produced = prod.run()
    assert produced.failed == 0, produced.errors
    assert produced.metrics.baseline.metrics["sum"] == [6, 9, 12]
    assert produced.metrics.treatments["big"].metrics["sum"] == [60, 63, 66]
    # our layout: the step's name is its folder
    assert json.loads(Path("data/producer/v0/replicate_1/big/write_values/values.json").read_text()) == [11, 21, 31]

    consumer = make_consumer(
        out,
        plugins=[execution()],
        treatments=[treatment("big", {"unused": 1}), treatment("other", {"unused": 2})],
    )
    with caplog.at_level(logging.WARNING):
        read = consumer.run()

    assert read.failed == 0, read.errors
    assert read.metrics.baseline.metrics["total"] == [6, 9, 12]
    assert read.metrics.treatments["big"].metrics["total"] == [60, 63, 66]  # the producer's "big"
    assert read.metrics.treatments["other"].metrics["total"] == [6, 9, 12]  # no "other" there: its baseline
    if kind == "serial":  # process workers log in their own processes
        assert "no condition 'other'; falling back to 'baseline'" in caplog.text
    assert "condition 'big'" not in caplog.text


def test_an_explicit_condition_is_read_by_every_consumer_condition() -> None:
    prod, _ = make_producer(plugins=[quiet()])
    prod.run()
    big = Artifact("values.json", load_json, producer="producer", condition="big")
    read = make_consumer(big, plugins=[quiet()], treatments=[treatment("t", {"unused": 1})]).run()
    assert read.metrics.baseline.metrics["total"] == [60, 63, 66]
    assert read.metrics.treatments["t"].metrics["total"] == [60, 63, 66]


def test_loader_receives_a_local_path_on_every_store(store_root: str) -> None:
    """On an object store the loader gets a local copy of the object: 0.27 loaders open files."""
    seen: list[tuple[str, bool]] = []

    def loader(path):
        seen.append((type(path).__name__, Path(path).is_file()))
        return load_json(path)

    prod, _ = make_producer(plugins=[quiet(), ArtifactPlugin(root_dir=store_root)], replicates=2)
    assert prod.run().failed == 0
    consumer = make_consumer(
        Artifact("values.json", loader, producer=prod), plugins=[quiet(), ArtifactPlugin(root_dir=store_root)]
    )
    read = consumer.run(replicates=2)
    assert read.failed == 0, read.errors
    assert read.metrics.baseline.metrics["total"] == [6, 9]
    assert {name for name, _ in seen} <= {"PosixPath", "WindowsPath"} and all(exists for _, exists in seen)
    # without a loader the consumer gets the file's bytes, as 0.27's default loader gives
    raw = Artifact("values.json", producer=prod)
    assert json.loads(raw.fetch({"replicate": 1, "condition": "baseline"})) == [2, 3, 4]


def test_write_outside_a_step_is_a_runtime_error_and_write_ctx_value_still_works() -> None:
    lonely = Artifact("z.txt", None, lambda v: v.upper().encode())
    with pytest.raises(RuntimeError, match="not bound to a context") as raised:
        lonely.write("x")
    assert isinstance(raised.value, CrystallizeError)
    ctx = FrozenContext({})
    lonely.write(ctx, "abc")  # ours: explicit context
    assert [(r.name, r.data) for r in ctx.artifacts] == [("z.txt", b"ABC")]


# ---------------------------------------------------------------- one name twice


@pipeline_step()
def twice(data, ctx):
    ctx.artifacts.add("y", b"2")
    ctx.artifacts.add("y", b"3")
    return data


@pipeline_step()
def first_x(data, ctx):
    ctx.artifacts.add("x", b"from first")
    return data


@pipeline_step()
def second_x(data, ctx):
    ctx.artifacts.add("x", b"from second")
    return data


def test_one_name_twice_in_a_step_fails_that_replicate_while_two_steps_may_each_write_it() -> None:
    from crystallize.datasources import ArtifactLog

    log = ArtifactLog()
    log.add("f", b"1")
    with pytest.raises(ContextMutationError, match="Artifact 'f' already written in this run"):
        log.add("f", b"2")

    failed = Experiment(datasource=numbers(), pipeline=Pipeline([twice()]), name="one", plugins=[quiet()]).run()
    assert failed.failed == 1
    record = failed.replicate_errors["baseline"][0]
    assert record.exception_type == "ContextMutationError" and "already written in this run" in record.message

    both = Experiment(
        datasource=numbers(), pipeline=Pipeline([first_x(), second_x()]), name="two", plugins=[quiet()]
    ).run()
    assert both.failed == 0
    assert Path("data/two/v0/replicate_0/baseline/first_x/x").read_bytes() == b"from first"
    assert Artifact("x", producer="two").fetch({"replicate": 0}) == b"from second"  # the last step wins


# ---------------------------------------------------------------- artifact_datasource


def test_artifact_datasource_gives_paths_by_our_step_name_or_by_0_27s() -> None:
    prod, _ = make_producer(plugins=[quiet()])
    prod.run()

    legacy = prod.artifact_datasource(step="Write_ValuesStep", name="values.json")  # 0.27's folder name
    assert legacy.replicates == 3
    # the consumer leaves replicates at its default and runs the producer's 3, as in 0.27
    paths = Experiment(datasource=legacy, pipeline=Pipeline([describe_path()]), name="paths", plugins=[quiet()])
    read = paths.run()
    assert read.failed == 0, read.errors
    assert read.metrics.baseline.metrics["is_path"] == [True, True, True]
    assert read.metrics.baseline.metrics["folder"] == ["write_values"] * 3
    assert read.metrics.baseline.metrics["first"] == [1, 2, 3]

    ours = prod.artifact_datasource("write_values", "values.json", "big")
    big = Experiment(datasource=ours, pipeline=Pipeline([describe_path()]), name="paths_big", plugins=[quiet()])
    assert big.run().metrics.baseline.metrics["first"] == [10, 11, 12]

    wrong = prod.artifact_datasource(step="NopeStep", name="values.json")
    missing = Experiment(datasource=wrong, pipeline=Pipeline([describe_path()]), name="m", plugins=[quiet()]).run()
    assert missing.failed == 3
    assert missing.replicate_errors["baseline"][0].exception_type == "ArtifactNotFoundError"


def test_artifact_datasource_of_an_experiment_that_never_ran() -> None:
    never = Experiment(datasource=numbers(), pipeline=Pipeline([total()]), name="never", replicates=2)
    with pytest.raises(FileNotFoundError, match="Metadata missing") as raised:
        never.artifact_datasource(step="TotalStep", name="x", require_metadata=True)
    assert isinstance(raised.value, ArtifactNotFoundError)
    lenient = never.artifact_datasource(step="TotalStep", name="x")
    assert lenient.replicates == 2  # nothing stored: the experiment's own count, as in 0.27
    with pytest.raises(ValidationError, match=r"no finished run.*run 'never' first"):
        Experiment(datasource=lenient, pipeline=Pipeline([total()]), name="reader", plugins=[quiet()]).run()


# ---------------------------------------------------------------- replicates


def test_replicates_on_artifacts_and_experiment_input_must_agree() -> None:
    from crystallize.datasources import MultiArtifactDataSource
    from crystallize.datasources.datasource import MultiArtifactDataSource as from_module

    assert MultiArtifactDataSource is ExperimentInput and from_module is ExperimentInput
    a, b = Artifact("a"), Artifact("b")
    assert a.replicates is None
    a.replicates, b.replicates = 2, 3
    with pytest.raises(ValueError, match="Conflicting replicates across artifacts: x=2, y=3"):
        ExperimentInput(x=a, y=b)
    b.replicates = 2
    assert ExperimentInput(x=a, y=b, z=numbers()).replicates == 2
    assert ExperimentInput(x=Artifact("q")).replicates is None
    assert [s.name for s in ExperimentInput(x=a, n=numbers()).required_outputs] == ["a"]
    with pytest.raises(ValidationError, match="positive int"):
        a.replicates = 0


def test_declared_replicates_set_the_consumers_count_and_more_than_the_producer_is_an_error() -> None:
    prod, _ = make_producer(plugins=[quiet()])
    prod.run()

    declared = Artifact("values.json", load_json, producer="producer")
    declared.replicates = 2
    read = make_consumer(declared, plugins=[quiet()], replicates=1).run()
    assert read.metrics.baseline.metrics["total"] == [6, 9]  # the declared 2, as 0.27 runs them

    pinned = Artifact("values.json", load_json, producer="producer")
    pinned.resolve_inputs()
    assert pinned.replicates == 3 and pinned.declared_replicates is None  # the producer run's count, once pinned

    # ours (0.27 silently ran fewer, or wrapped around): asking for more is refused before anything runs
    with pytest.raises(ValidationError, match=r"runs 3 replicates.*producer run of 2"):
        make_consumer(declared, plugins=[quiet()], replicates=3).run()
    source = prod.artifact_datasource(step="write_values", name="values.json")
    with pytest.raises(ValidationError, match=r"runs 5 replicates.*at most 3"):
        make_consumer(source, plugins=[quiet()]).run(replicates=5)
    assert [p.name for p in Path("data/consumer").iterdir()] == ["v0"]  # only the first run claimed a version


def test_a_graph_resume_skips_a_finished_consumer_whose_count_its_datasource_declares(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from crystallize import ExperimentGraph

    prod, out = make_producer(plugins=[quiet()], replicates=2)
    declared = Artifact("values.json", load_json, producer="producer")
    declared.replicates = 2
    consumer = make_consumer(declared, plugins=[quiet()], replicates=1)  # runs the declared 2
    graph = ExperimentGraph(prod, consumer)
    graph.run()
    with caplog.at_level(logging.INFO, logger="crystallize"):
        results = graph.run(strategy="resume")
    assert "'consumer' v0 is complete; skipping it" in caplog.text
    assert "changed since" not in caplog.text
    assert results["consumer"].metrics.baseline.metrics["total"] == [6, 9]
    del out


def test_the_default_writer_takes_bytes_or_str_and_refuses_the_rest_as_0_27_does() -> None:
    """Nothing is pickled by default: a pickle read back from a store would run what it holds."""
    from crystallize import FrozenContext

    ctx = FrozenContext({"replicate": 0, "condition": "baseline"})
    out = Artifact("values.json")
    out.write(ctx, "text")
    out_bytes = Artifact("raw.bin")
    out_bytes.write(ctx, b"\x00\x01")
    with pytest.raises(TypeError, match="default_writer expects bytes or str, got dict"):
        Artifact("other.json").write(ctx, {"a": 1})
    assert [record.name for record in ctx.artifacts] == ["values.json", "raw.bin"]
