"""Experiments defined as folders: config.yaml beside the Python modules it names."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from crystallize import (
    Experiment,
    Hypothesis,
    ParallelExecution,
    SeedPlugin,
    SerialExecution,
    ValidationError,
    treatment,
)
from crystallize.config import _package_name, load_experiment, load_experiment_folder

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "yaml_experiment"
GRAPH_EXAMPLE = REPO / "examples" / "yaml_graph"

STEPS_PY = """
import random

from crystallize import DataSource, FrozenContext, PipelineStep, data_source, pipeline_step, treatment


class Constant(DataSource):
    def __init__(self, value=0.5):
        self.value = value

    def fetch(self, ctx):
        return [self.value] * 3


class Offset(PipelineStep):
    def __init__(self, by=1.0):
        self.by = by

    def __call__(self, data, ctx):
        return [x + self.by for x in data]

    @property
    def params(self):
        return {"by": self.by}


@data_source
def fetch_numbers(ctx: FrozenContext, *, start: int = 1):
    return [start, start + 1, start + 2]


@data_source
def noisy_numbers(ctx: FrozenContext):
    return [random.random() for _ in range(3)]


@pipeline_step()
def add_delta(data, ctx: FrozenContext, *, delta: float = 0.0):
    return [x + delta for x in data]


@pipeline_step()
def scale(data, ctx: FrozenContext, *, factor: float = 1.0):
    return [x * factor for x in data]


@pipeline_step()
def summarize(data, ctx: FrozenContext):
    return data, {"total": sum(data), "count": len(data)}


@pipeline_step()
def record_label(data, ctx: FrozenContext, *, label: str):
    return data, {"label": label}


def add_five(ctx):
    ctx.add("delta", 5.0)


triple = treatment("triple_it", {"factor": 3.0})

not_a_step = 42


def plain_helper(data, ctx):
    return data
"""

VERIFIERS_PY = """
from crystallize import verifier


@verifier
def mean_diff(baseline, treatment, alpha: float = 0.05):
    name = next(iter(baseline))
    diff = sum(treatment[name]) / len(treatment[name]) - sum(baseline[name]) / len(baseline[name])
    return {"metric": name, "diff": diff, "alpha": alpha, "p_value": 1.0 / (1.0 + abs(diff))}


def by_biggest_diff(result):
    results = result if isinstance(result, list) else [result]
    return -max(abs(r["diff"]) for r in results)
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def experiment_folder(tmp_path: Path, config: str, name: str = "exp", **extra: str) -> Path:
    return write(
        tmp_path / name,
        {"config.yaml": config, "steps.py": STEPS_PY, "verifiers.py": VERIFIERS_PY, **extra},
    )


def quiet() -> list:
    return [SerialExecution(progress=False)]


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------- the example folder


def test_example_folder_runs_like_the_python_built_experiment() -> None:
    loaded = Experiment.from_yaml(EXAMPLE, plugins=[SeedPlugin(seed=11), *quiet()])
    assert loaded.name == "basic_yaml"
    assert loaded.replicates == 12
    assert loaded.pipeline.signature() == "add_delta -> summarize"
    from_yaml = loaded.run()

    steps = import_file(EXAMPLE / "steps.py", "yaml_example_steps_by_hand")
    verifiers = import_file(EXAMPLE / "verifiers.py", "yaml_example_verifiers_by_hand")
    by_hand = (
        Experiment.builder("basic_yaml_by_hand")
        .datasource(steps.fetch_numbers())
        .add_step(steps.add_delta())
        .add_step(steps.summarize())
        .plugins([SeedPlugin(seed=11), *quiet()])
        .treatments([treatment("boost_total", {"delta": 10.0})])
        .hypotheses([Hypothesis(verifier=verifiers.welch_t_test(), metrics="total", name="order_by_p_value")])
        .replicates(12)
        .build()
        .run()
    )
    assert from_yaml.metrics.baseline.metrics["total"] == by_hand.metrics.baseline.metrics["total"]
    boosted = from_yaml.metrics.treatments["boost_total"].metrics["total"]
    assert boosted == by_hand.metrics.treatments["boost_total"].metrics["total"]
    assert len(boosted) == 12 and len(set(boosted)) == 12  # noisy: the seed matters, and it matched
    ours = from_yaml.get_hypothesis("order_by_p_value").results["boost_total"]
    theirs = by_hand.get_hypothesis("order_by_p_value").results["boost_total"]
    assert ours == theirs and ours["significant"] is True


def test_config_file_path_works_and_name_defaults_to_the_folder(tmp_path: Path) -> None:
    folder = experiment_folder(tmp_path, "datasource: fetch_numbers\nsteps: [summarize]\n", name="my_exp")
    experiment = load_experiment(folder / "config.yaml", plugins=quiet())
    assert experiment.name == "my_exp"
    assert experiment.replicates == 1
    result = experiment.run()
    assert result.metrics.baseline.metrics["total"] == [6]


# --------------------------------------------------------------------- what the config sets


def test_step_and_datasource_params(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        replicates: 2
        datasource: {name: fetch_numbers, params: {start: 10}}
        steps:
          - {name: add_delta, params: {delta: 2.5}}
          - summarize
        """,
    )
    result = load_experiment(folder, plugins=quiet()).run()
    assert result.metrics.baseline.metrics["total"] == [40.5, 40.5]  # 10+11+12 + 3*2.5


def test_datasource_and_step_classes(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        datasource: {name: Constant, params: {value: 2.0}}
        steps: [{name: Offset, params: {by: 3.0}}, Offset, summarize]
        """,
    )
    experiment = load_experiment(folder, plugins=quiet())
    assert [step.params for step in experiment.pipeline.steps[:2]] == [{"by": 3.0}, {"by": 1.0}]
    assert experiment.run().metrics.baseline.metrics["total"] == [18.0]  # 3 * (2 + 3 + 1)


def test_treatments_as_mappings_and_as_callables(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        datasource: fetch_numbers
        steps: [add_delta, scale, summarize]
        treatments:
          boost: {delta: 10.0}
          by_function: add_five
          tripled: triple
          dotted: steps.add_five
        """,
    )
    experiment = load_experiment(folder, plugins=quiet())
    assert [t.name for t in experiment.treatments] == ["boost", "by_function", "tripled", "dotted"]
    metrics = experiment.run().metrics
    assert metrics.baseline.metrics["total"] == [6]
    assert metrics.treatments["boost"].metrics["total"] == [36.0]
    assert metrics.treatments["by_function"].metrics["total"] == [21.0]
    assert metrics.treatments["tripled"].metrics["total"] == [18.0]
    assert metrics.treatments["dotted"].metrics["total"] == [21.0]


def test_hypotheses_with_params_list_of_lists_and_ranker(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        replicates: 2
        datasource: fetch_numbers
        steps: [add_delta, summarize]
        treatments:
          small: {delta: 1.0}
          big: {delta: 4.0}
        hypotheses:
          - name: grouped
            verifier: {name: mean_diff, params: {alpha: 0.01}}
            metrics: [[total], [count]]
            ranker: by_biggest_diff
          - name: default_alpha
            verifier: mean_diff
            metrics: total
        """,
    )
    result = load_experiment(folder, plugins=quiet()).run()
    grouped = result.get_hypothesis("grouped")
    big = grouped.results["big"]
    assert isinstance(big, list) and [r["metric"] for r in big] == ["total", "count"]
    verifier_keys = {"metric", "diff", "alpha", "p_value"}  # the rest: the multiple-comparison adjustment
    assert {k: big[0][k] for k in verifier_keys} == {"metric": "total", "diff": 12.0, "alpha": 0.01, "p_value": 1 / 13}
    assert set(big[0]) - verifier_keys == {"p_value_adjusted", "significant_adjusted", "adjustment"}
    assert big[1]["diff"] == 0.0
    assert grouped.ranking["best"] == "big"
    assert [name for name, _ in grouped.ranking["ranked"]] == ["big", "small"]
    assert result.get_hypothesis("default_alpha").results["small"]["alpha"] == 0.05


def test_exit_step_and_initial_ctx(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        datasource: fetch_numbers
        initial_ctx: {factor: 2.0, label: from-config}
        steps:
          - scale
          - {name: add_delta, params: {delta: 100.0}, exit: true}
          - summarize
          - record_label
        """,
    )
    experiment = load_experiment(folder, plugins=quiet())
    assert experiment.apply() == [102.0, 104.0, 106.0]  # stops after the exit step: summarize never ran
    metrics = experiment.run().metrics.baseline.metrics
    assert metrics["total"] == [312.0] and metrics["label"] == ["from-config"]


def test_a_hypothesis_object_can_be_named(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        datasource: fetch_numbers
        steps: [add_delta, summarize]
        treatments: {boost: {delta: 1.0}}
        hypotheses: [named_hypothesis]
        """,
        **{
            "hyp.py": """
            from crystallize import hypothesis
            from .verifiers import mean_diff

            @hypothesis(verifier=mean_diff(), metrics="total")
            def named_hypothesis(result):
                return result["p_value"]
            """
        },
    )
    result = load_experiment(folder, plugins=quiet()).run()
    assert result.get_hypothesis("named_hypothesis").results["boost"]["diff"] == 3.0


# --------------------------------------------------------------------- errors name the file and the key

BASIC = "datasource: fetch_numbers\nsteps: [add_delta, summarize]\n"

ERROR_CASES = {
    "yaml_syntax": (
        "datasource: fetch_numbers\nsteps:\n  - add_delta\n  - {name: summarize\n",
        ["config.yaml, line 5, column 1: invalid YAML: while parsing a flow mapping (line 4)"],
    ),
    "missing_required_key": ("datasource: fetch_numbers\n", ["config.yaml", "steps: required key missing"]),
    "wrong_type": (
        BASIC + "replicates: many\n",
        ["config.yaml, line 3: replicates: expected a positive integer, got 'many' (str)"],
    ),
    "zero_replicates": (BASIC + "replicates: 0\n", ["line 3: replicates: expected a positive integer, got 0"]),
    "unknown_top_key": (
        "datasource: fetch_numbers\nstpes: [summarize]\n",
        ["config.yaml, line 2: stpes: unknown key 'stpes' (did you mean 'steps'?)"],
    ),
    "unknown_nested_key": (
        "datasource: fetch_numbers\nsteps:\n  - add_delta\n  - {name: scale, parms: {factor: 2}}\n",
        ["config.yaml, line 4: steps[1].parms: unknown key 'parms' (did you mean 'params'?)"],
    ),
    "unknown_step": (
        "datasource: fetch_numbers\nsteps:\n  - add_delta\n  - sumarize\n",
        [
            "config.yaml, line 4: steps[1]: no step named 'sumarize'",
            "did you mean 'summarize'?",
            "steps defined here: Offset, add_delta, record_label, scale, summarize",
        ],
    ),
    "unknown_step_param": (
        "datasource: fetch_numbers\nsteps:\n  - {name: add_delta, params: {delt: 1}}\n",
        ["line 3: steps[0].params:", "'delt'", "'delta'"],
    ),
    "params_not_a_mapping": (
        "datasource: fetch_numbers\nsteps:\n  - {name: add_delta, params: [1, 2]}\n",
        ["line 3: steps[0].params: expected a mapping of parameter names to values, got a list"],
    ),
    "undecorated_function": (
        "datasource: fetch_numbers\nsteps: [plain_helper]\n",
        ["steps[0]: 'plain_helper' in steps.py is a plain function", "decorated with @pipeline_step"],
    ),
    "not_a_step": (
        "datasource: fetch_numbers\nsteps: [not_a_step]\n",
        ["steps[0]: 'not_a_step' in steps.py is 42 (int), expected a @pipeline_step function"],
    ),
    "step_as_datasource": (
        "datasource: add_delta\nsteps: [summarize]\n",
        ["line 1: datasource: 'add_delta' in steps.py is a step, expected a @data_source function"],
    ),
    "unknown_verifier": (
        BASIC + "treatments: {b: {delta: 1}}\nhypotheses:\n  - name: h\n    verifier: mean_dif\n    metrics: total\n",
        [
            "line 6: hypotheses[0].verifier: no verifier named 'mean_dif'",
            "did you mean 'mean_diff'?",
            "verifiers defined here: mean_diff",
        ],
    ),
    "verifier_param": (
        BASIC
        + "treatments: {b: {delta: 1}}\nhypotheses:\n  - name: h\n"
        + "    verifier: {name: mean_diff, params: {beta: 1}}\n",
        ["line 6: hypotheses[0].verifier.params: 'mean_diff' cannot be called", "beta"],
    ),
    "bad_metrics": (
        BASIC + "treatments: {b: {delta: 1}}\nhypotheses:\n  - {name: h, verifier: mean_diff, metrics: [a, [b]]}\n",
        ["hypotheses[0].metrics: expected a metric name, a list of names, or a list of lists"],
    ),
    "hypotheses_without_treatments": (
        BASIC + "hypotheses:\n  - {name: h, verifier: mean_diff}\n",
        ["line 3: hypotheses: hypotheses compare treatments", "'treatments'"],
    ),
    "treatment_value": (
        BASIC + "treatments:\n  boost: 3\n",
        ["line 4: treatments.boost: expected a mapping of context values", "got 3 (int)"],
    ),
    "baseline_treatment": (BASIC + "treatments:\n  baseline: {delta: 1}\n", ["treatments.baseline:", "'baseline'"]),
    "duplicate_key": (BASIC + "replicates: 2\nreplicates: 3\n", ["line 4: replicates: duplicate key", "line 3"]),
    "bad_name": (BASIC + "name: a/b\n", ["line 3: name: experiment name 'a/b' cannot be used"]),
    "artifact_missing_key": (
        "datasource:\n  artifact: {name: x.json}\nsteps: [summarize]\n",
        ["line 2: datasource.artifact.experiment: required key missing"],
    ),
    "unknown_loader": (
        "datasource:\n  artifact: {experiment: p, name: x.json, loader: jsn}\nsteps: [summarize]\n",
        [
            "line 2: datasource.artifact.loader: unknown loader 'jsn' (did you mean 'json'?)",
            "json, text, bytes, pickle",
        ],
    ),
    "top_level_list": ("- fetch_numbers\n", ["config.yaml: expected a mapping of keys"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_config_errors_name_the_file_the_key_and_what_was_expected(tmp_path: Path, case: str) -> None:
    config, expected = ERROR_CASES[case]
    folder = experiment_folder(tmp_path, config)
    with pytest.raises(ValidationError) as info:
        load_experiment(folder)
    message = str(info.value)
    assert message.startswith(str(folder / "config.yaml")), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_config_file(tmp_path: Path) -> None:
    write(tmp_path / "empty", {"steps.py": STEPS_PY})
    with pytest.raises(ValidationError, match=r"empty/config\.yaml: no such file"):
        load_experiment(tmp_path / "empty")
    with pytest.raises(ValidationError, match="no such file or folder"):
        Experiment.from_yaml(tmp_path / "nowhere")


def test_ambiguous_name_names_both_modules_and_dotted_names_choose(tmp_path: Path) -> None:
    other = """
    from crystallize import pipeline_step

    @pipeline_step()
    def summarize(data, ctx):
        return data, {"total": -1}
    """
    folder = experiment_folder(tmp_path, BASIC, **{"more_steps.py": other})
    with pytest.raises(ValidationError) as info:
        load_experiment(folder)
    message = str(info.value)
    assert f"{folder / 'config.yaml'}, line 2: steps[1]: 'summarize' is ambiguous" in message
    assert "more_steps.py and steps.py" in message and "'more_steps.summarize'" in message

    (folder / "config.yaml").write_text("datasource: fetch_numbers\nsteps: [more_steps.summarize]\n")
    assert load_experiment(folder, plugins=quiet()).run().metrics.baseline.metrics["total"] == [-1]


def test_a_name_imported_from_a_sibling_is_not_ambiguous(tmp_path: Path) -> None:
    reexport = "from .steps import summarize, add_delta  # noqa: F401\n"
    folder = experiment_folder(tmp_path, BASIC, **{"reexport.py": reexport})
    assert load_experiment(folder, plugins=quiet()).run().metrics.baseline.metrics["total"] == [6]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("x = 1\nraise RuntimeError('boom at import')\n", ["broken.py, line 2", "RuntimeError: boom at import"]),
        ("def f(:\n    pass\n", ["broken.py, line 1", "SyntaxError"]),
        ("import steps\n", ["broken.py, line 1", "ModuleNotFoundError", "from .steps import"]),
    ],
)
def test_module_import_errors_name_the_module_file(tmp_path: Path, module: str, expected: list[str]) -> None:
    folder = experiment_folder(tmp_path, BASIC, **{"broken.py": module})
    with pytest.raises(ValidationError) as info:
        load_experiment(folder)
    message = str(info.value)
    assert message.startswith(str(folder / "broken.py")), message
    assert "cannot import module 'broken'" in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    package = _package_name(folder)  # nothing half-imported is left behind
    assert not any(name == package or name.startswith(package + ".") for name in sys.modules)


def test_a_reloaded_folder_resumes_its_previous_run(tmp_path: Path) -> None:
    config = "replicates: 3\ndatasource: noisy_numbers\nsteps: [add_delta, summarize]\ntreatments: {boost: add_five}\n"
    folder = experiment_folder(tmp_path, config)
    first = load_experiment(folder, plugins=quiet()).run()
    again = load_experiment(folder, plugins=quiet()).run(strategy="resume")  # fresh modules, same fingerprints
    assert again.provenance["resumed"] == {"version": first.provenance["version"], "reused": 6}
    assert again.metrics.baseline.metrics["total"] == first.metrics.baseline.metrics["total"]


# --------------------------------------------------------------------- folders side by side, workers


def _same_names_folder(tmp_path: Path, name: str, offset: int) -> Path:
    return write(
        tmp_path / name / "exp",  # same folder name, same module name, same function names
        {
            "config.yaml": f"name: {name}\ndatasource: numbers\nsteps: [shift, summarize]\n",
            "steps.py": f"""
            from crystallize import data_source, pipeline_step

            @data_source
            def numbers(ctx):
                return [1, 2, 3]

            @pipeline_step()
            def shift(data, ctx):
                return [x + {offset} for x in data]

            @pipeline_step()
            def summarize(data, ctx):
                return data, {{"total": sum(data), "source": "{name}"}}
            """,
        },
    )


def test_two_folders_with_their_own_steps_py_load_side_by_side(tmp_path: Path) -> None:
    first = load_experiment(_same_names_folder(tmp_path, "first", 10), plugins=quiet())
    second = load_experiment(_same_names_folder(tmp_path, "second", 100), plugins=quiet())
    assert first.pipeline.steps[0].fn is not second.pipeline.steps[0].fn
    assert first.pipeline.steps[0].fn.__module__ != second.pipeline.steps[0].fn.__module__
    assert first.run().metrics.baseline.metrics == {"total": [36], "source": ["first"]}
    assert second.run().metrics.baseline.metrics == {"total": [306], "source": ["second"]}


def test_runs_in_spawned_worker_processes_with_functions_by_value(tmp_path: Path) -> None:
    folder = experiment_folder(
        tmp_path,
        """
        replicates: 4
        datasource: noisy_numbers
        steps: [add_delta, {name: Offset, params: {by: 0.25}}, summarize]
        treatments: {boost: add_five}
        """,
    )
    # spawn: the workers start fresh and cannot import the folder's package, so the plain function
    # (add_five) and the class (Offset) must travel by value
    process = ParallelExecution(max_workers=2, executor_type="process", mp_context="spawn", progress=False)
    in_processes = load_experiment(folder, plugins=[SeedPlugin(seed=3), process]).run()
    serial = load_experiment(folder, plugins=[SeedPlugin(seed=3), *quiet()]).run()
    assert not in_processes.errors
    assert in_processes.metrics.baseline.metrics["total"] == serial.metrics.baseline.metrics["total"]
    assert (
        in_processes.metrics.treatments["boost"].metrics["total"] == serial.metrics.treatments["boost"].metrics["total"]
    )
    assert len(set(serial.metrics.baseline.metrics["total"])) == 4


# --------------------------------------------------------------------- folders of experiments, artifacts

PRODUCER = {
    "config.yaml": """
    name: producer
    replicates: 3
    datasource: numbers
    steps: [{name: store, params: {artifact: numbers.json}}]
    outputs:
      - {name: numbers.json, loader: json}
      - raw.bin
    """,
    "steps.py": """
    import json

    from crystallize import data_source, pipeline_step

    @data_source
    def numbers(ctx):
        return [ctx["replicate"], 10 * ctx["replicate"]]

    @pipeline_step()
    def store(data, ctx, *, artifact):
        ctx.artifacts.add(artifact, json.dumps(data).encode())
        ctx.artifacts.add("raw.bin", b"raw")
        return data, {"first": data[0]}
    """,
}

CONSUMER = {
    "config.yaml": """
    name: consumer
    replicates: 3
    datasource:
      artifact: {experiment: producer, name: numbers.json, loader: json}
    steps: [scale, summarize]
    treatments: {doubled: {factor: 2}}
    """,
    "steps.py": """
    from crystallize import pipeline_step

    @pipeline_step()
    def scale(data, ctx, *, factor=1):
        return [x * factor for x in data]

    @pipeline_step()
    def summarize(data, ctx):
        return data, {"total": sum(data)}
    """,
}


def test_folder_of_experiments_with_an_artifact_datasource(tmp_path: Path) -> None:
    from crystallize.artifact import Artifact
    from crystallize.graph import ExperimentGraph

    root = tmp_path / "graph"
    write(root / "producer", PRODUCER)
    write(root / "consumer", CONSUMER)
    (root / "notes").mkdir()  # no config.yaml: not an experiment
    consumer, producer = load_experiment_folder(root)
    assert (consumer.name, producer.name) == ("consumer", "producer")
    source = consumer.datasource
    assert isinstance(source, Artifact)
    assert (source.name, source.producer_name, source.condition) == ("numbers.json", "producer", "baseline")
    assert source.loader(b"[1, 2]") == [1, 2]
    assert sorted(producer.outputs) == ["numbers.json", "raw.bin"]
    assert producer.outputs["numbers.json"].loader(b"[3]") == [3]
    assert producer.outputs["raw.bin"].loader is None

    results = ExperimentGraph.from_yaml(root).run()
    metrics = results["consumer"].metrics
    assert metrics.baseline.metrics["total"] == [0, 11, 22]  # replicate i read producer replicate i
    assert metrics.treatments["doubled"].metrics["total"] == [0, 22, 44]


def test_folder_of_experiments_errors(tmp_path: Path) -> None:
    root = tmp_path / "graph"
    write(root / "producer", PRODUCER)
    write(root / "consumer", {**CONSUMER, "config.yaml": CONSUMER["config.yaml"].replace("producer", "prodcer")})
    with pytest.raises(ValidationError) as info:
        load_experiment_folder(root)
    message = str(info.value)
    assert message.startswith(str(root / "consumer" / "config.yaml") + ", line 4: datasource.artifact.experiment:")
    assert "no experiment named 'prodcer'" in message and "did you mean 'producer'?" in message

    write(root / "consumer", {"config.yaml": "name: producer\n" + BASIC, "steps.py": STEPS_PY})
    with pytest.raises(
        ValidationError, match=r"producer/config\.yaml, line 1: name: .*also used by .*consumer/config\.yaml"
    ):
        load_experiment_folder(root)

    with pytest.raises(ValidationError, match=r"no subfolder has a config\.yaml"):
        load_experiment_folder(write(tmp_path / "nothing", {}))


def test_graph_example_runs(tmp_path: Path) -> None:
    from crystallize.graph import ExperimentGraph

    graph = ExperimentGraph.from_yaml(GRAPH_EXAMPLE)
    assert graph.order() == ["producer", "consumer"]
    for experiment in graph.experiments.values():
        experiment.plugins = [p for p in experiment.plugins if not isinstance(p, SerialExecution)] + quiet()
    results = graph.run()
    consumer = results["consumer"]
    assert len(consumer.metrics.baseline.metrics["error"]) == 8
    assert consumer.get_hypothesis("error_changes").results["double_gain"]["significant"] is True
