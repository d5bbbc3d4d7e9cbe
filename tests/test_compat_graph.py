"""ExperimentGraph as 0.27 users call it: ``from_yaml`` of a config that reads other experiments,
``run(treatments, replicates, strategy)``, ``arun(progress_callback=)``, ``name``, treatments
inherited from parents, cycles refused when the graph is built, and resume that skips a finished
experiment whose missing output nobody downstream reads.

The numbers of the first test were checked against crystallize-ml 0.27.0 running the same folders.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from test_compat_folders import DATASOURCES_PY, PRODUCER_YAML, producer_folder, write_folder

from crystallize import (
    Artifact,
    Experiment,
    ExperimentGraph,
    ExperimentInput,
    Pipeline,
    SerialExecution,
    Treatment,
    ValidationError,
    data_source,
    pipeline_step,
)

CONSUMER_YAML = """
name: consumer
replicates: 2
datasource:
  - prev: "producer#out"
  - extra: tens
steps:
  - use
treatments:
  other:
    k: 3
hypotheses:
  - name: h
    verifier: always_sig
    metrics: got
"""

CONSUMER_STEPS_PY = """
from crystallize import pipeline_step

@pipeline_step()
def use(data, ctx, k: int = 0):
    ctx.metrics.add("got", data["prev"]["val"] + data["extra"] + k)
    ctx.metrics.add("cond_read", data["prev"]["cond"])
    return data
"""

VERIFIERS_PY = """
from crystallize import verifier

@verifier
def always_sig(baseline, treatment):
    return {"p_value": 0.01, "significant": True}
"""


def experiments_folder(root: Path) -> Path:
    producer_folder(root)
    write_folder(
        root / "consumer",
        {
            "config.yaml": CONSUMER_YAML,
            "datasources.py": DATASOURCES_PY,
            "steps.py": CONSUMER_STEPS_PY,
            "verifiers.py": VERIFIERS_PY,
        },
    )
    return root


def test_from_yaml_finds_the_producer_and_runs_as_027_does(_private_workdir: Path) -> None:
    root = experiments_folder(_private_workdir / "experiments")

    graph = ExperimentGraph.from_yaml(root / "consumer" / "config.yaml")

    assert graph.order() == ["producer", "consumer"] and graph.name == "consumer"
    results = graph.run()
    consumer = results["consumer"]
    assert consumer.metrics.baseline.metrics == {"got": [14, 14], "cond_read": ["baseline", "baseline"]}
    # 'bigger' is inherited from the producer and reads the producer's 'bigger' condition;
    # 'other' is the consumer's own and falls back to the producer's baseline
    assert list(consumer.metrics.treatments) == ["bigger", "other"]
    assert consumer.metrics.treatments["bigger"].metrics == {"got": [14, 14], "cond_read": ["bigger", "bigger"]}
    assert consumer.metrics.treatments["other"].metrics == {"got": [17, 17], "cond_read": ["baseline", "baseline"]}
    assert [h.name for h in consumer.metrics.hypotheses] == ["h"]
    assert results["producer"].metrics.baseline.metrics["val"] == [4, 4]

    # resume skips both: the consumer's plan holds the treatments it inherited
    graph.run(strategy="resume")
    assert sorted(p.name for p in Path("data/consumer").iterdir()) == ["v0"]
    assert sorted(p.name for p in Path("data/producer").iterdir()) == ["v0"]

    # the folder of experiments gives the same graph
    again = ExperimentGraph.from_yaml(root)
    assert again.order() == ["producer", "consumer"]
    assert again["consumer"].datasource.inputs["prev"] is again["producer"].outputs["out"]


def test_from_yaml_reports_a_producer_it_cannot_find(_private_workdir: Path) -> None:
    root = _private_workdir / "experiments"
    consumer = write_folder(root / "consumer", {"config.yaml": CONSUMER_YAML, "steps.py": CONSUMER_STEPS_PY})
    with pytest.raises(ValidationError, match=r"no datasource named 'tens' in .*datasources.py \(no such file\)"):
        ExperimentGraph.from_yaml(consumer / "config.yaml")
    (consumer / "datasources.py").write_text(DATASOURCES_PY)
    (consumer / "verifiers.py").write_text(VERIFIERS_PY)
    with pytest.raises(FileNotFoundError, match="Experiment 'producer' not found"):
        ExperimentGraph.from_yaml(consumer / "config.yaml")


# ---------------------------------------------------------------- graphs in code


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def emit(data, ctx, level: int = 0):
    ctx.artifacts.add("level.txt", str(level).encode())
    ctx.artifacts.add("side.txt", b"side")
    ctx.metrics.add("level", level)
    return data


@pipeline_step()
def read_level(data, ctx, level: int = 0):
    ctx.metrics.add("read", int(data))
    ctx.metrics.add("level", level)
    return data


def quiet() -> SerialExecution:
    return SerialExecution(progress=False)


def chain(treatments: dict[str, list[Treatment]] | None = None) -> tuple[Experiment, Experiment, Experiment]:
    """parent -> child -> grandchild, each reading level.txt of the one before."""
    treatments = treatments or {}
    level, side = Artifact("level.txt", loader=lambda p: p.read_text()), Artifact("side.txt")
    parent = Experiment(
        datasource=zero(),
        pipeline=Pipeline([emit()]),
        plugins=[quiet()],
        outputs=[level, side],
        treatments=treatments.get("parent", []),
        name="parent",
        replicates=2,
    )
    child_out = Artifact("level.txt", loader=lambda p: p.read_text())
    child = Experiment(
        datasource=ExperimentInput(up=level),
        pipeline=Pipeline([_child_step()]),
        plugins=[quiet()],
        outputs=[child_out],
        treatments=treatments.get("child", []),
        name="child",
        replicates=2,
    )
    grandchild = Experiment(
        datasource=child_out,
        pipeline=Pipeline([read_level()]),
        plugins=[quiet()],
        treatments=treatments.get("grandchild", []),
        name="grandchild",
        replicates=2,
    )
    return parent, child, grandchild


@pipeline_step()
def _pass_level(data, ctx, level: int = 0):
    ctx.artifacts.add("level.txt", data["up"].encode())
    ctx.metrics.add("level", level)
    return data


def _child_step():
    return _pass_level()


def test_a_child_runs_its_parents_treatments_merged_with_its_own(_private_workdir: Path) -> None:
    parent, child, grandchild = chain(
        {
            "parent": [Treatment("low", {"level": 1}), Treatment("high", {"level": 2})],
            "child": [Treatment("high", {"level": 20}), Treatment("top", {"level": 30})],
        }
    )
    graph = ExperimentGraph(parent, child, grandchild)

    assert [t.name for t in graph.treatments_for("grandchild")] == ["low", "high", "top"]
    results = graph.run()

    assert list(results) == ["parent", "child", "grandchild"]
    child_metrics = results["child"].metrics.treatments
    assert child_metrics["low"].metrics["level"] == [1, 1]  # inherited
    assert child_metrics["high"].metrics["level"] == [20, 20]  # its own wins over the parent's
    grand = results["grandchild"].metrics.treatments
    assert {name: grand[name].metrics["level"] for name in grand} == {"low": [1, 1], "high": [20, 20], "top": [30, 30]}
    # each condition read the same condition of the experiment before (baseline when it has none)
    assert grand["low"].metrics["read"] == [1, 1] and grand["high"].metrics["read"] == [2, 2]
    assert grand["top"].metrics["read"] == [0, 0]


def test_run_takes_treatments_replicates_and_strategy_in_027_order(_private_workdir: Path) -> None:
    parent, child, grandchild = chain({"parent": [Treatment("low", {"level": 1})]})
    graph = ExperimentGraph(parent, child, grandchild, name="levels")
    assert graph.name == "levels"

    results = graph.run([Treatment("only", {"level": 7})], 1, "rerun")

    for name, result in results.items():  # treatments given to the graph override every experiment's own
        assert list(result.metrics.treatments) == ["only"], name
        assert result.metrics.treatments["only"].metrics["level"] == [7]
        assert len(result.metrics.baseline.metrics["level"]) == 1


def test_arun_awaits_the_progress_callback_and_runs_inside_a_loop(_private_workdir: Path) -> None:
    parent, child, grandchild = chain()
    graph = ExperimentGraph(parent, child, grandchild)
    seen: list[tuple[str, str]] = []

    async def progress(status: str, name: str) -> None:
        seen.append((status, name))

    async def main() -> None:
        await graph.arun(progress_callback=progress)
        await graph.arun(strategy="resume", progress_callback=progress)
        graph.run(strategy="resume")  # the sync form works inside a running event loop too

    asyncio.run(main())

    first = [(s, n) for n in ("parent", "child", "grandchild") for s in ("running", "completed")]
    assert seen == first + [("completed", n) for n in ("parent", "child", "grandchild")]  # resume skipped all


def test_name_is_the_final_experiments(_private_workdir: Path) -> None:
    parent, child, grandchild = chain()
    assert ExperimentGraph(parent, child, grandchild).name == "grandchild"
    assert ExperimentGraph.from_experiments([parent, child]).name == "child"
    lone = Experiment(datasource=zero(), pipeline=Pipeline([emit()]), plugins=[quiet()], name="lone")
    assert ExperimentGraph(parent, lone).name == "ExperimentGraph"  # two final experiments
    assert ExperimentGraph().name is None


def test_from_experiments_refuses_a_cycle_when_the_graph_is_built(_private_workdir: Path) -> None:
    a_out, b_out = Artifact("a.txt"), Artifact("b.txt")
    a = Experiment(datasource=b_out, pipeline=Pipeline([emit()]), outputs=[a_out], name="a")
    b = Experiment(datasource=a_out, pipeline=Pipeline([emit()]), outputs=[b_out], name="b")

    with pytest.raises(ValueError, match=r"contains cycles.*cycle: (a -> b -> a|b -> a -> b)") as info:
        ExperimentGraph.from_experiments([a, b])
    assert isinstance(info.value, ValidationError)
    with pytest.raises(ValidationError, match="contains cycles"):
        ExperimentGraph(a, b)


def test_resume_skips_a_finished_experiment_whose_missing_output_nobody_reads(_private_workdir: Path) -> None:
    parent, child, _ = chain()
    graph = ExperimentGraph(parent, child)
    graph.run()
    # side.txt is declared but nothing downstream reads it; level.txt is read by the child
    for lost in Path("data/parent/v0").rglob("side.txt"):
        lost.unlink()

    results = graph.run(strategy="resume")

    assert sorted(p.name for p in Path("data/parent").iterdir()) == ["v0"]  # skipped, not run again
    assert results["parent"].provenance["finished"] is True
    assert sorted(p.name for p in Path("data/child").iterdir()) == ["v0"]

    # alone, the parent has no reader at all: a missing read output does not matter either
    for lost in Path("data/parent/v0").rglob("level.txt"):
        lost.unlink()
    ExperimentGraph(parent).run(strategy="resume")
    assert sorted(p.name for p in Path("data/parent").iterdir()) == ["v0"]
    # with its reader, the parent runs again as a new version
    ExperimentGraph(parent, child).run(strategy="resume")
    assert sorted(p.name for p in Path("data/parent").iterdir()) == ["v0", "v1"]


def test_yaml_graph_children_inherit_from_a_027_folder(_private_workdir: Path) -> None:
    """A config without treatments of its own, but with a hypothesis, tests its parent's treatments."""
    root = _private_workdir / "experiments"
    producer_folder(root)
    write_folder(
        root / "reader",
        {
            "config.yaml": textwrap.dedent(
                """
                replicates: 2
                datasource: {prev: "producer#out"}
                steps: [use]
                hypotheses:
                  - {name: h, verifier: always_sig, metrics: got}
                """
            ),
            "steps.py": CONSUMER_STEPS_PY.replace('data["extra"]', "0"),
            "verifiers.py": VERIFIERS_PY,
        },
    )
    assert "bigger" in PRODUCER_YAML

    results = ExperimentGraph.from_yaml(root / "reader" / "config.yaml").run()

    reader = results["reader"]
    assert list(reader.metrics.treatments) == ["bigger"]
    assert reader.metrics.treatments["bigger"].metrics["cond_read"] == ["bigger", "bigger"]
    assert reader.get_hypothesis("h") is not None
