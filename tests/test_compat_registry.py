"""0.27 compatibility (issue 11, item 4): the datasource registry and ``quick_experiment``."""

from __future__ import annotations

import importlib.util
import random
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import crystallize
from crystallize import (
    DataSource,
    Experiment,
    FrozenContext,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    data_source,
    get_datasource,
    list_datasources,
    pipeline_step,
    quick_experiment,
    register_datasource,
)
from crystallize.config import load_experiment
from crystallize.datasources import registry
from crystallize.errors import CrystallizeError, DatasourceNotFoundError


@pytest.fixture(autouse=True)
def _empty_registry() -> Iterator[None]:
    registry.clear_registry()
    yield
    registry.clear_registry()


@pipeline_step()
def total(data: list[int], ctx: FrozenContext) -> tuple[list[int], dict[str, int]]:
    return data, {"total": sum(data)}


def _run(source: DataSource, **ctx: object) -> dict[str, list[object]]:
    experiment = Experiment(
        source, Pipeline([total()]), [SerialExecution(progress=False)], name="reg", initial_ctx=dict(ctx)
    )
    return dict(experiment.run().metrics.baseline.metrics)


# --- the registry -----------------------------------------------------------------------------


def test_named_registration_decorates_and_the_registered_source_runs_an_experiment() -> None:
    @data_source("training_data", register=True)
    def load(ctx: FrozenContext, size: int = 3) -> list[int]:
        return list(range(size))

    assert load.__name__ == "load"  # still the factory, usable as before
    assert list_datasources() == ["training_data"]
    found = get_datasource("training_data")
    assert isinstance(found, DataSource)
    assert found.fetch(FrozenContext()) == [0, 1, 2]
    assert _run(found)["total"] == [3]
    assert load(size=5).fetch(FrozenContext()) == [0, 1, 2, 3, 4]


def test_register_true_without_a_name_uses_the_function_name() -> None:
    @data_source(register=True)
    def numbers(ctx: FrozenContext) -> list[int]:
        return [4, 5]

    assert list_datasources() == ["numbers"]
    assert get_datasource("numbers").fetch(FrozenContext()) == [4, 5]


def test_a_name_without_register_and_the_plain_decorator_register_nothing() -> None:
    # As in 0.27: only register=True registers.
    @data_source("unregistered")
    def one(ctx: FrozenContext) -> list[int]:
        return [1]

    @data_source
    def two(ctx: FrozenContext) -> list[int]:
        return [2]

    @data_source()
    def three(ctx: FrozenContext) -> list[int]:
        return [3]

    assert list_datasources() == []
    assert [one().fetch(FrozenContext()), two().fetch(FrozenContext()), three().fetch(FrozenContext())] == [
        [1],
        [2],
        [3],
    ]


def test_a_registered_source_with_a_required_parameter_takes_it_from_the_context() -> None:
    @data_source("sized", register=True)
    def sized(ctx: FrozenContext, size: int) -> list[int]:
        return [1] * size

    assert _run(get_datasource("sized"), size=4)["total"] == [4]


def test_register_datasource_and_the_0_27_module_path_share_one_registry() -> None:
    @data_source
    def values(ctx: FrozenContext, value: int = 1) -> list[int]:
        return [value]

    source = values(value=7)
    register_datasource("seven", source)
    assert registry.get_datasource("seven") is source
    assert crystallize.get_datasource is registry.get_datasource
    assert registry.list_datasources() == ["seven"]
    assert registry.unregister_datasource("seven") is source
    assert registry.unregister_datasource("seven") is None
    assert list_datasources() == []


def test_a_name_taken_by_another_datasource_is_a_value_error() -> None:
    @data_source("shared", register=True)
    def first(ctx: FrozenContext) -> list[int]:
        return [1]

    with pytest.raises(ValueError, match="already registered as 'shared'") as caught:

        @data_source("shared", register=True)
        def second(ctx: FrozenContext) -> list[int]:
            return [2]

    assert isinstance(caught.value, CrystallizeError)
    assert get_datasource("shared").fetch(FrozenContext()) == [1]  # the first one is kept
    with pytest.raises(ValueError, match="unregister_datasource"):
        register_datasource("shared", get_datasource("shared"))  # by hand, even the same object: as in 0.27
    source = first()
    register_datasource("by_hand", source)
    with pytest.raises(ValueError):
        register_datasource("by_hand", source)


def test_a_module_imported_afresh_registers_its_sources_again(tmp_path: Path) -> None:
    # A folder experiment loaded twice, a reloaded module, a notebook cell run twice.
    module_file = tmp_path / "my_sources.py"
    module_file.write_text(
        textwrap.dedent(
            """
            from crystallize import data_source

            @data_source("fresh", register=True)
            def fresh(ctx):
                return [VALUE]
            """
        ).replace("VALUE", "1")
    )

    def load() -> None:
        spec = importlib.util.spec_from_file_location("my_sources", module_file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["my_sources"] = module
        spec.loader.exec_module(module)

    try:
        load()
        module_file.write_text(module_file.read_text().replace("[1]", "[2]"))
        load()
    finally:
        sys.modules.pop("my_sources", None)
    assert get_datasource("fresh").fetch(FrozenContext()) == [2]  # the newer definition


def test_a_folder_experiment_that_registers_its_source_loads_twice(tmp_path: Path) -> None:
    folder = tmp_path / "registering"
    folder.mkdir()
    (folder / "steps.py").write_text(
        textwrap.dedent(
            """
            from crystallize import data_source, pipeline_step

            @data_source("folder_numbers", register=True)
            def numbers(ctx):
                return [1, 2, 3]

            @pipeline_step()
            def summarize(data, ctx):
                return data, {"total": sum(data)}
            """
        )
    )
    (folder / "config.yaml").write_text("datasource: numbers\nsteps: [summarize]\n")
    for _ in range(2):
        experiment = load_experiment(folder / "config.yaml", plugins=[SerialExecution(progress=False)])
    assert experiment.run().metrics.baseline.metrics["total"] == [6]
    assert list_datasources() == ["folder_numbers"]
    assert get_datasource("folder_numbers").fetch(FrozenContext()) == [1, 2, 3]


def test_an_unknown_name_is_a_key_error_naming_the_registered_ones() -> None:
    @data_source("known", register=True)
    def known(ctx: FrozenContext) -> list[int]:
        return []

    with pytest.raises(KeyError) as caught:
        get_datasource("missing")
    assert isinstance(caught.value, DatasourceNotFoundError)
    assert "'missing'" in str(caught.value) and "['known']" in str(caught.value)


def test_only_datasources_can_be_registered() -> None:
    @data_source
    def factory(ctx: FrozenContext) -> list[int]:
        return []

    with pytest.raises(TypeError, match="call the @data_source factory first"):
        register_datasource("factory", factory)  # the factory, not a datasource
    with pytest.raises(TypeError):
        data_source("name", register="yes")  # type: ignore[arg-type]
    assert list_datasources() == []


# --- quick_experiment ------------------------------------------------------------------------


def play(config: dict[str, int]) -> dict[str, float]:
    return {"score": random.random() * config["difficulty"]}


def test_quick_experiment_returns_each_configs_results_in_replicate_order() -> None:
    results = quick_experiment(play, {"easy": {"difficulty": 1}, "hard": {"difficulty": 10}}, replicates=3, seed=42)
    assert list(results) == ["easy", "hard"]
    assert all(len(runs) == 3 for runs in results.values())
    easy = [run["score"] for run in results["easy"]]
    hard = [run["score"] for run in results["hard"]]
    assert len(set(easy)) == 3  # each replicate its own seed
    assert hard == pytest.approx([10 * score for score in easy])  # configs share a replicate's seed
    assert quick_experiment(play, {"easy": {"difficulty": 1}, "hard": {"difficulty": 10}}, 3, seed=42) == results


def test_quick_experiment_seeds_replicates_as_an_experiment_with_the_same_seed() -> None:
    @pipeline_step()
    def draw(data: int, ctx: FrozenContext) -> tuple[int, dict[str, float]]:
        return data, {"draw": random.random(), "np_draw": float(np.random.random())}

    @data_source
    def zero(ctx: FrozenContext) -> int:
        return 0

    experiment = Experiment(
        zero(), Pipeline([draw()]), [SeedPlugin(seed=7), SerialExecution(progress=False)], name="q", replicates=3
    )
    metrics = experiment.run().metrics.baseline.metrics
    quick = quick_experiment(lambda: (random.random(), float(np.random.random())), replicates=3, seed=7)
    assert [pair[0] for pair in quick["baseline"]] == list(metrics["draw"])
    assert [pair[1] for pair in quick["baseline"]] == list(metrics["np_draw"])


def test_quick_experiment_passes_the_context_when_asked() -> None:
    def with_ctx(config: int, ctx: FrozenContext) -> tuple[dict[str, object], int, float]:
        return dict(ctx.as_dict()), config, float(ctx.rng.random())

    results = quick_experiment(with_ctx, {"a": 1, "b": 2}, replicates=2, seed=3)
    contexts = [run[0] for runs in results.values() for run in runs]
    assert contexts == [
        {"replicate": 0, "condition": "a", "seed": 3},
        {"replicate": 1, "condition": "a", "seed": 3},
        {"replicate": 0, "condition": "b", "seed": 3},
        {"replicate": 1, "condition": "b", "seed": 3},
    ]
    assert [run[1] for run in results["b"]] == [2, 2]
    draws_a = [run[2] for run in results["a"]]
    assert draws_a == [run[2] for run in results["b"]]  # ctx.rng: per replicate, shared by configs
    assert draws_a[0] != draws_a[1]


def test_quick_experiment_without_configs_runs_one_baseline_config() -> None:
    assert quick_experiment(lambda: "done", replicates=2) == {"baseline": ["done", "done"]}
    assert quick_experiment(lambda ctx: ctx["condition"]) == {"baseline": ["baseline"]}
    assert quick_experiment(lambda: "no config", {"none": None}) == {"none": ["no config"]}  # None: not passed


def test_quick_experiment_without_a_seed_leaves_the_global_generators_alone() -> None:
    random.seed(1234)
    first = quick_experiment(lambda: random.random(), replicates=2)
    random.seed(1234)
    assert quick_experiment(lambda: random.random(), replicates=2) == first


def test_quick_experiment_rejects_bad_arguments_and_lets_the_functions_errors_through() -> None:
    with pytest.raises(ValueError, match="replicates must be a positive integer"):
        quick_experiment(play, {"easy": {"difficulty": 1}}, replicates=0)
    with pytest.raises(TypeError, match="configs maps a name"):
        quick_experiment(play, [{"difficulty": 1}])  # type: ignore[arg-type]

    def broken(config: int) -> None:
        raise LookupError(f"bad config {config}")

    with pytest.raises(LookupError, match="bad config 5"):
        quick_experiment(broken, {"x": 5})


def test_quick_experiment_verbose_shows_progress_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    assert quick_experiment(lambda: 1, replicates=2, verbose=True) == {"baseline": [1, 1]}
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "quick_experiment" in captured.err
