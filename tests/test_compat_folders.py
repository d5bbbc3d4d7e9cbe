"""Experiment folders in the 0.27 format load and run unchanged, beside folders in ours.

Each test writes its folders into its own temporary working folder (the autouse
``_private_workdir`` fixture): ``config.yaml`` with ``datasource: {alias: fn}``,
``steps: [name | {name: {params}}]``, ``outputs: {alias: {file_name, loader, writer}}``, and
the code in ``datasources.py``, ``steps.py``, ``outputs.py`` and ``verifiers.py``. The expected
numbers were checked against crystallize-ml 0.27.0 running the same folders.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from crystallize import Artifact, Experiment, ExperimentInput, ValidationError
from crystallize.config import ExperimentFolderNotFoundError, find_experiments_root
from crystallize.config.format027 import detect

DATASOURCES_PY = """
from crystallize import data_source

@data_source
def numbers(ctx):
    return 1

@data_source
def tens(ctx):
    return 10
"""

STEPS_PY = """
from crystallize import Artifact, pipeline_step
from crystallize.utils.context import FrozenContext

@pipeline_step()
def add_one(data, ctx: FrozenContext):
    return data + 1

@pipeline_step()
def write_out(data, ctx: FrozenContext, out: Artifact, delta: int = 1):
    val = data + delta
    out.write({"val": val, "cond": ctx.get("condition")})
    ctx.metrics.add("val", val)
    return val
"""

OUTPUTS_PY = """
import json
from pathlib import Path

def load_json(p: Path):
    return json.loads(p.read_text())

def dump_json(obj) -> bytes:
    return json.dumps(obj).encode()
"""

PRODUCER_YAML = """
name: producer
replicates: 2
cli:
  priority: 1
  group: Experiments
datasource:
  numbers: numbers
steps:
  - add_one
  - write_out: {delta: 2}
outputs:
  out:
    file_name: out.json
    loader: load_json
    writer: dump_json
treatments:
  bigger:
    delta: 5
"""

# A scaffolded main.py loads the folder itself: importing it while loading would recurse.
MAIN_PY = """
raise RuntimeError("main.py must not be imported when the folder is loaded")
"""


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def producer_folder(root: Path) -> Path:
    return write_folder(
        root / "producer",
        {
            "config.yaml": PRODUCER_YAML,
            "datasources.py": DATASOURCES_PY,
            "steps.py": STEPS_PY,
            "outputs.py": OUTPUTS_PY,
            "main.py": MAIN_PY,
        },
    )


def test_a_027_folder_runs_unchanged_writing_its_outputs(_private_workdir: Path) -> None:
    folder = producer_folder(_private_workdir / "experiments")

    experiment = Experiment.from_yaml(folder / "config.yaml")
    result = experiment.run()

    assert experiment.name == "producer" and experiment.replicates == 2
    # outputs are keyed by alias; the Artifact is named by file_name
    assert list(experiment.outputs) == ["out"] and experiment.outputs["out"].name == "out.json"
    # an explicit step parameter wins over the treatment's context value, as in 0.27
    assert result.metrics.baseline.metrics["val"] == [4, 4]
    assert result.metrics.treatments["bigger"].metrics["val"] == [4, 4]
    written = sorted(Path("data/producer").glob("v0/replicate_*/*/*/out.json"))
    assert len(written) == 4  # 2 replicates x 2 conditions, through the writer
    assert {json.loads(p.read_text())["cond"] for p in written} == {"baseline", "bigger"}
    # the folder form of the call gives the same experiment
    assert Experiment.from_yaml(folder).outputs["out"].name == "out.json"


def test_a_list_of_datasource_maps_is_an_experiment_input(_private_workdir: Path) -> None:
    folder = write_folder(
        _private_workdir / "two_inputs",
        {
            "config.yaml": """
                replicates: 1
                datasource:
                  - one: numbers
                  - ten: tens
                steps:
                  - total
            """,
            "datasources.py": DATASOURCES_PY,
            "steps.py": """
                from crystallize import pipeline_step

                @pipeline_step()
                def total(data, ctx):
                    ctx.metrics.add("total", data["one"] + data["ten"])
                    return data
            """,
        },
    )

    experiment = Experiment.from_yaml(folder / "config.yaml")

    assert experiment.name == "two_inputs"  # the folder's name
    assert isinstance(experiment.datasource, ExperimentInput)
    assert experiment.run().metrics.baseline.metrics["total"] == [11]


def test_artifact_parameters_bind_by_alias_and_outputs_are_checked(_private_workdir: Path) -> None:
    steps = """
        from __future__ import annotations  # the annotation is the string 'Artifact'

        from crystallize import Artifact, pipeline_step

        @pipeline_step()
        def write(data, ctx, sink: Artifact):
            sink.write(b"payload")
            return data
    """

    def folder(name: str, config: str) -> Path:
        return write_folder(
            _private_workdir / name,
            {"config.yaml": config, "datasources.py": DATASOURCES_PY, "steps.py": steps},
        )

    bound = folder(
        "bound",
        """
        datasource: {n: numbers}
        steps:
          - write: {sink: results}
        outputs:
          results: {file_name: results.bin}
        """,
    )
    experiment = Experiment.from_yaml(bound / "config.yaml")
    experiment.run()
    assert Path("data/bound/v0/replicate_0/baseline").is_dir()
    assert [p.read_bytes() for p in Path("data/bound/v0").rglob("results.bin")] == [b"payload"]

    unknown = folder(
        "unknown",
        """
        datasource: {n: numbers}
        steps:
          - write: {sink: nope}
        outputs:
          results: {}
        """,
    )
    with pytest.raises(ValueError, match="Output 'nope' requested by step 'write' is not in experiment outputs"):
        Experiment.from_yaml(unknown / "config.yaml")

    unused = folder(
        "unused",
        """
        datasource: {n: numbers}
        steps:
          - write
        outputs:
          sink: {}
          extra: {file_name: extra.txt}
        """,
    )
    with pytest.raises(ValidationError, match=r"line 4: outputs: Outputs not used in any step: extra"):
        Experiment.from_yaml(unused / "config.yaml")


def test_hypotheses_take_verifier_factories_from_verifiers_py(_private_workdir: Path) -> None:
    folder = write_folder(
        _private_workdir / "tested",
        {
            "config.yaml": """
                replicates: 3
                datasource: {n: numbers}
                steps: [measure]
                treatments:
                  shifted: {shift: 4}
                  unchanged:
                hypotheses:
                  - name: decorated
                    verifier: always_significant
                    metrics: value
                  - verifier: built_by_factory
                    metrics: value
            """,
            "datasources.py": DATASOURCES_PY,
            "steps.py": """
                from crystallize import pipeline_step

                @pipeline_step()
                def measure(data, ctx, shift: int = 0):
                    ctx.metrics.add("value", data + shift + ctx["replicate"])
                    return data
            """,
            "verifiers.py": """
                from crystallize import verifier

                @verifier
                def always_significant(baseline, treatment):
                    return {"p_value": 0.01, "significant": True}

                def built_by_factory():
                    def compare(baseline, treatment):
                        diff = sum(treatment["value"]) - sum(baseline["value"])
                        return {"p_value": 0.5, "significant": False, "diff": diff}
                    return compare
            """,
        },
    )

    result = Experiment.from_yaml(folder / "config.yaml").run()

    assert [t for t in result.metrics.treatments] == ["shifted", "unchanged"]
    decorated = result.get_hypothesis("decorated")
    assert decorated is not None and decorated.results["shifted"]["significant"] is True
    by_factory = [h for h in result.metrics.hypotheses if h.name != "decorated"]
    assert len(by_factory) == 1 and by_factory[0].results["shifted"]["diff"] == 12


def test_the_two_formats_are_told_apart(_private_workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert detect({"datasource": "numbers", "steps": ["a"]}) is None
    assert detect({"datasource": {"name": "numbers", "params": {"n": 1}}, "steps": [{"name": "a"}]}) is None
    assert detect({"datasource": {"artifact": {"experiment": "p", "name": "x"}}, "steps": ["a"]}) is None
    assert detect({"datasource": "numbers", "steps": ["a"], "outputs": ["x.json"]}) is None
    assert "outputs" in str(detect({"datasource": {"n": "numbers"}, "steps": ["a"], "outputs": {"x": {}}}))
    assert "list" in str(detect({"datasource": [{"n": "numbers"}], "steps": ["a"]}))
    assert "producer#output" in str(detect({"datasource": {"name": "p#x"}, "steps": ["a"]}))
    assert "aliases" in str(detect({"datasource": {"n": "numbers"}, "steps": ["a"]}))
    assert "{step: {params}}" in str(detect({"datasource": {"name": "n"}, "steps": [{"a": {"k": 1}}]}))
    assert "cli" in str(detect({"cli": {}, "datasource": {"name": "n"}, "steps": ["a"]}))

    # ours keeps rejecting unknown keys; in the 0.27 format (which ignored them) they are logged
    ours = write_folder(
        _private_workdir / "ours",
        {
            "config.yaml": "datasource: numbers\nsteps: [add_one]\ncolour: red\n",
            "datasources.py": DATASOURCES_PY,
            "steps.py": STEPS_PY,
        },
    )
    with pytest.raises(ValidationError, match="unknown key 'colour'"):
        Experiment.from_yaml(ours)
    old = write_folder(
        _private_workdir / "old",
        {
            "config.yaml": "datasource: {n: numbers}\nsteps: [add_one]\ncolour: red\n",
            "datasources.py": DATASOURCES_PY,
            "steps.py": STEPS_PY,
        },
    )
    with caplog.at_level(logging.WARNING, logger="crystallize.config"):
        experiment = Experiment.from_yaml(old)
    assert "ignoring unknown key(s) 'colour'" in caplog.text
    assert experiment.run().failed == 0


def test_sections_of_the_wrong_type_are_type_errors_as_in_027(_private_workdir: Path) -> None:
    base = {"datasources.py": DATASOURCES_PY, "steps.py": STEPS_PY}
    wrong_source = write_folder(
        _private_workdir / "wrong_source", {"config.yaml": "cli: {}\ndatasource: numbers\nsteps: [add_one]\n", **base}
    )
    with pytest.raises(TypeError, match="datasource must be provided as"):
        Experiment.from_yaml(wrong_source)
    wrong_treatments = write_folder(
        _private_workdir / "wrong_treatments",
        {"config.yaml": "datasource: {n: numbers}\nsteps: [add_one]\ntreatments: [a, b]\n", **base},
    )
    with pytest.raises(TypeError, match="line 3: treatments: expected a mapping") as info:
        Experiment.from_yaml(wrong_treatments)
    assert isinstance(info.value, ValidationError)


def test_names_are_looked_up_in_their_fixed_file(_private_workdir: Path) -> None:
    """0.27 reads datasources from datasources.py and steps from steps.py; a step defined elsewhere
    is not found, and the error says where it looked."""
    folder = write_folder(
        _private_workdir / "misplaced",
        {
            "config.yaml": "datasource: {n: numbers}\nsteps: [add_one, tens]\n",
            "datasources.py": DATASOURCES_PY,
            "steps.py": STEPS_PY,
        },
    )
    with pytest.raises(ValidationError, match=r"line 2: steps\[1\]: no step named 'tens' in steps.py"):
        Experiment.from_yaml(folder / "config.yaml")


CONSUMER_YAML = """
name: consumer
replicates: 2
datasource:
  prev: "producer#out"
steps:
  - use
"""

CONSUMER_STEPS_PY = """
from crystallize import pipeline_step

@pipeline_step()
def use(data, ctx):
    ctx.metrics.add("got", data["prev"]["val"])
    return data
"""


def test_a_consumer_loaded_alone_links_its_producers_output(_private_workdir: Path) -> None:
    """``"producer#out"`` names the producer's output alias; the producer's folder is found beside the
    consumer's, so the consumer reads the producer's file name with its loader."""
    root = _private_workdir / "flows"  # no 'experiments' folder: siblings are found all the same
    producer_folder(root)
    write_folder(root / "consumer", {"config.yaml": CONSUMER_YAML, "steps.py": CONSUMER_STEPS_PY})

    consumer = Experiment.from_yaml(root / "consumer" / "config.yaml")

    assert isinstance(consumer.datasource, ExperimentInput)
    linked = consumer.datasource.inputs["prev"]
    assert isinstance(linked, Artifact) and linked.name == "out.json"
    assert linked.producer is not None and not isinstance(linked.producer, str)
    assert linked.producer.outputs["out"] is linked
    linked.producer.run()
    assert consumer.run().metrics.baseline.metrics["got"] == [4, 4]


def test_a_missing_producer_or_output_is_an_error_at_load(_private_workdir: Path) -> None:
    root = _private_workdir / "experiments"
    write_folder(root / "consumer", {"config.yaml": CONSUMER_YAML, "steps.py": CONSUMER_STEPS_PY})
    with pytest.raises(FileNotFoundError, match=r"line 4: datasource.prev: Experiment 'producer' not found") as info:
        Experiment.from_yaml(root / "consumer" / "config.yaml")
    assert isinstance(info.value, ExperimentFolderNotFoundError)

    producer_folder(root)
    (root / "consumer" / "config.yaml").write_text(CONSUMER_YAML.replace("producer#out", "producer#missing"))
    with pytest.raises(ValidationError, match=r"experiment 'producer' has no output 'missing'.*outputs: out"):
        Experiment.from_yaml(root / "consumer" / "config.yaml")
    # the output's file name finds it too (0.27 wanted the alias)
    (root / "consumer" / "config.yaml").write_text(CONSUMER_YAML.replace("producer#out", "producer#out.json"))
    consumer = Experiment.from_yaml(root / "consumer" / "config.yaml")
    assert consumer.datasource.inputs["prev"].name == "out.json"


def test_find_experiments_root(_private_workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from crystallize.experiments.experiment_graph import find_experiments_root as from_027_path
    from crystallize.graph import find_experiments_root as from_graph

    assert from_027_path is find_experiments_root and from_graph is find_experiments_root
    inner = _private_workdir / "project" / "experiments" / "a" / "deep"
    inner.mkdir(parents=True)
    assert find_experiments_root(inner) == inner.parent.parent  # a folder named 'experiments'
    beside = _private_workdir / "project" / "src"
    beside.mkdir()
    assert find_experiments_root(beside) == _private_workdir / "project" / "experiments"  # one that holds it

    lone = _private_workdir / "lone"
    lone.mkdir()
    with pytest.raises(FileNotFoundError, match="no 'experiments' folder"):
        find_experiments_root(lone)
    with caplog.at_level(logging.WARNING):
        assert find_experiments_root(lone, strict=False) == lone.resolve()
    assert "No 'experiments' folder" in caplog.text
