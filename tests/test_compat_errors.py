"""Mistakes a Crystallize 0.27 user makes raise what 0.27 raised, with the words they match on.

Each row triggers one mistake through the public API and names the exception class 0.27
raised there (a builtin, or 0.27's own ``ContextMutationError``) and a pattern of 0.27's
message. Ours may raise a subclass (``ValidationError`` is a ``ValueError``, ``ParameterError``
a ``TypeError``) and say more, but ``except ValueError`` and ``pytest.raises(..., match=...)``
written against 0.27 must keep working.

The rows use only what 0.27 and this package have in common, so the table also runs against
0.27 itself (``test_a_mistake_raises_what_0_27_raised`` passes there row for row).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crystallize import (
    Artifact,
    Experiment,
    ExperimentGraph,
    ExperimentInput,
    FrozenContext,
    ParallelExecution,
    Pipeline,
    PipelineStep,
    SerialExecution,
    Treatment,
    data_source,
    hypothesis,
    inject_from_ctx,
    pipeline_step,
    verifier,
)
from crystallize.utils.exceptions import ContextMutationError


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # runs write data/ here (also when this file runs without our conftest)


# ---------------------------------------------------------------- a small experiment


@data_source
def numbers(ctx: Any) -> list[int]:
    return [1, 2, 3]


@pipeline_step()
def add(data: list[int], ctx: Any, delta: int = 1) -> list[int]:
    ctx.metrics.add("total", sum(data))
    return [x + delta for x in data]


@pipeline_step()
def write_twice(data: Any, ctx: Any) -> Any:
    ctx.artifacts.add("note.txt", b"first")
    ctx.artifacts.add("note.txt", b"second")
    return data


class QuotaExceeded(Exception):
    """A user's own exception class with its own constructor."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"used {used} of {limit}")
        self.used = used


@pipeline_step()
def reject(data: Any, ctx: Any) -> Any:
    raise ValueError("bad input for reject")


@pipeline_step()
def over_quota(data: Any, ctx: Any) -> Any:
    raise QuotaExceeded(12, 10)


class NeedsModel(PipelineStep):
    """A class step whose setup() rejects its configuration."""

    def setup(self, ctx: Any) -> None:
        raise ValueError("model path is not set")

    def __call__(self, data: Any, ctx: Any) -> Any:
        return data

    @property
    def params(self) -> dict[str, Any]:
        return {}


@verifier
def always_half(baseline: Any, treatment: Any, alpha: float) -> dict[str, float]:
    return {"p_value": 0.5, "alpha": alpha}


@hypothesis(verifier=always_half(alpha=0.05), metrics="total")
def by_p_value(result: Any) -> float:
    return result["p_value"]


def experiment(**overrides: Any) -> Experiment:
    overrides.setdefault("datasource", numbers())
    overrides.setdefault("pipeline", Pipeline([add()]))
    overrides.setdefault("plugins", [SerialExecution()])
    return Experiment(**overrides)


class OneShot:
    """A minimal ask/tell optimizer written against 0.27's BaseOptimizer contract."""

    def __init__(self) -> None:
        from crystallize.experiments.optimizers import Objective

        self.objective = Objective(metric="total", direction="minimize")

    def ask(self) -> list[Treatment]:
        return [Treatment("bigger", {"delta": 2})]

    def tell(self, values: dict[str, float]) -> None:
        pass

    def get_best_treatment(self) -> Treatment:
        return Treatment("bigger", {"delta": 2})


# ---------------------------------------------------------------- triggers


def mutate_key() -> None:
    FrozenContext({"a": 1}).add("a", 2)


def assign_key() -> None:
    ctx = FrozenContext({"a": 1})
    ctx["a"] = 2


def read_missing_key() -> None:
    FrozenContext({})["nope"]


def graph_with_cycle() -> None:
    first, second = experiment(name="first"), experiment(name="second")
    graph = ExperimentGraph()
    graph.add_experiment(first)
    graph.add_experiment(second)
    graph.add_dependency(second, first)
    graph.add_dependency(first, second)
    graph.run()


def graph_reading_an_unproduced_artifact() -> None:
    ExperimentGraph.from_experiments([experiment(name="reader", datasource=ExperimentInput(x=Artifact("x.txt")))])


def inject(*args: Any) -> Any:
    @inject_from_ctx
    def helper(data: Any, ctx: Any, size: int) -> Any:
        return size

    return helper(*args)


def register_twice() -> None:
    from crystallize.datasources.registry import register_datasource, unregister_datasource

    register_datasource("compat_errors_twice", numbers())
    try:
        register_datasource("compat_errors_twice", numbers())
    finally:
        unregister_datasource("compat_errors_twice")


def get_unregistered() -> None:
    from crystallize.datasources.registry import get_datasource

    get_datasource("compat_errors_nothing_here")


def inputs_with_conflicting_replicates() -> None:
    first, second = Artifact("a.txt"), Artifact("b.txt")
    first.replicates, second.replicates = 2, 3
    ExperimentInput(a=first, b=second)


def artifact_source_without_metadata() -> None:
    producer = experiment(name="producer")
    producer.artifact_datasource(step="add", name="x.txt", require_metadata=True)


def print_tree_with_bad_format() -> None:
    experiment().run().print_tree("bogus")


# (id, trigger, what 0.27 raised, a pattern of 0.27's message)
ROWS: list[tuple[str, Callable[[], Any], type[BaseException], str | None]] = [
    ("context add of an existing key", mutate_key, ContextMutationError, "Cannot mutate existing key: 'a'"),
    ("context item assignment of an existing key", assign_key, ContextMutationError, "Cannot mutate existing key: 'a'"),
    ("context read of a missing key", read_missing_key, KeyError, "nope"),
    (
        "artifact written twice by one step",
        lambda: experiment(pipeline=Pipeline([write_twice()])).apply(),
        ContextMutationError,
        "Artifact 'note.txt' already written in this run",
    ),
    (
        "apply() of a step that raises ValueError",
        lambda: experiment(pipeline=Pipeline([reject()])).apply(),
        ValueError,
        "bad input for reject",
    ),
    (
        "apply() of a step that raises the user's own class",
        lambda: experiment(pipeline=Pipeline([over_quota()])).apply(),
        QuotaExceeded,
        "used 12 of 10",
    ),
    ("empty pipeline", lambda: Pipeline([]), ValueError, "Pipeline must contain at least one step"),
    (
        "replicates given as a string",
        lambda: experiment(replicates="3"),
        TypeError,
        "replicates must be an integer, but got str",
    ),
    (
        "replicates given as a float",
        lambda: experiment(replicates=2.5),
        TypeError,
        "replicates must be an integer, but got float",
    ),
    (
        "run() of a step whose setup() raises",
        lambda: experiment(pipeline=Pipeline([NeedsModel()])).run(),
        ValueError,
        "model path is not set",
    ),
    (
        "a datasource name registered twice",
        register_twice,
        ValueError,
        "Datasource 'compat_errors_twice' is already registered",
    ),
    (
        "an unregistered datasource name",
        get_unregistered,
        KeyError,
        "No datasource registered with name 'compat_errors_nothing_here'",
    ),
    (
        "Artifact.write(value) outside a step",
        lambda: Artifact("x.txt").write(b"1"),
        RuntimeError,
        "Artifact not bound to context",
    ),
    (
        "ExperimentInput of artifacts with different replicates",
        inputs_with_conflicting_replicates,
        ValueError,
        "Conflicting replicates across artifacts: a=2, b=3",
    ),
    (
        "artifact_datasource(require_metadata=True) of a producer that never ran",
        artifact_source_without_metadata,
        FileNotFoundError,
        "Metadata missing",
    ),
    ("run(replicates=...) given a string", lambda: experiment().run(replicates="2"), TypeError, None),
    ("optimize() given num_trials as a string", lambda: experiment().optimize(OneShot(), "2"), TypeError, None),
    (
        "optimize() given replicates_per_trial as a string",
        lambda: experiment().optimize(OneShot(), 1, "2"),
        TypeError,
        None,
    ),
    (
        "validate without a datasource",
        lambda: experiment(datasource=None).validate(),
        ValueError,
        "Experiment requires datasource and pipeline",
    ),
    (
        "validate without a pipeline",
        lambda: experiment(pipeline=None).validate(),
        ValueError,
        "Experiment requires datasource and pipeline",
    ),
    (
        "run without a datasource",
        lambda: experiment(datasource=None).run(),
        ValueError,
        "Experiment requires datasource and pipeline",
    ),
    (
        "apply without a datasource",
        lambda: experiment(datasource=None).apply(),
        ValueError,
        "Experiment requires datasource and pipeline",
    ),
    (
        "optimize without a datasource",
        lambda: experiment(datasource=None).optimize(OneShot(), 1),
        ValueError,
        "Experiment requires datasource and pipeline",
    ),
    (
        "hypotheses but no treatments",
        lambda: experiment(hypotheses=[by_p_value]).run(),
        ValueError,
        "Cannot verify hypotheses without treatments",
    ),
    (
        "run(hypotheses=...) but no treatments",
        lambda: experiment().run(hypotheses=[by_p_value]),
        ValueError,
        "Cannot verify hypotheses without treatments",
    ),
    (
        "builder without a datasource",
        lambda: Experiment.builder().add_step(add()).build(),
        ValueError,
        "datasource must be provided",
    ),
    ("step factory given an unknown parameter", lambda: add(detla=1), TypeError, "Unknown parameters: detla"),
    ("step factory given a positional argument", lambda: add(1), TypeError, None),
    (
        "verifier factory given an unknown parameter",
        lambda: always_half(alpha=0.1, beta=2),
        TypeError,
        "Unknown parameters: beta",
    ),
    ("verifier factory missing a parameter", lambda: always_half(), TypeError, "Missing parameters: alpha"),
    ("graph with a cycle", graph_with_cycle, ValueError, "contains cycles"),
    (
        "graph reading an artifact nobody produces",
        graph_reading_an_unproduced_artifact,
        ValueError,
        "Artifact 'x.txt' has no producing experiment",
    ),
    ("ExperimentInput without inputs", lambda: ExperimentInput(), ValueError, "At least one input must be provided"),
    (
        "ParallelExecution with an unknown executor_type",
        lambda: experiment(plugins=[ParallelExecution(executor_type="bogus")]).run(),
        ValueError,
        "executor_type must be one of",
    ),
    (
        "inject_from_ctx helper called without ctx",
        lambda: inject([1]),
        TypeError,
        "inject_from_ctx requires 'ctx' argument",
    ),
    (
        "inject_from_ctx helper called with a dict as ctx",
        lambda: inject([1], {"size": 1}),
        TypeError,
        "'ctx' must be a FrozenContext",
    ),
    (
        "inject_from_ctx helper missing a parameter",
        lambda: inject([1], FrozenContext({})),
        TypeError,
        "not found in the Context",
    ),
    ("print_tree with an unknown format", print_tree_with_bad_format, ValueError, "Invalid format spec"),
]


@pytest.mark.parametrize(
    ("trigger", "expected", "pattern"),
    [pytest.param(trigger, expected, pattern, id=name) for name, trigger, expected, pattern in ROWS],
)
def test_a_mistake_raises_what_0_27_raised(
    trigger: Callable[[], Any], expected: type[BaseException], pattern: str | None
) -> None:
    with pytest.raises(expected, match=pattern):
        trigger()


def test_each_row_is_also_a_crystallize_error() -> None:
    """Ours raise our own classes (catchable both ways); only a Mapping's missing key stays a plain KeyError."""
    from crystallize.errors import CrystallizeError

    for name, trigger, _, _ in ROWS:
        with pytest.raises(Exception) as info:  # the class is what is checked below
            trigger()
        if name == "context read of a missing key":
            assert type(info.value) is KeyError
        else:
            assert isinstance(info.value, CrystallizeError), (name, type(info.value).__mro__)


def test_a_step_error_from_apply_keeps_the_users_class_and_our_details() -> None:
    from crystallize import PipelineExecutionError

    with pytest.raises(QuotaExceeded) as info:
        experiment(pipeline=Pipeline([over_quota()])).apply()
    assert isinstance(info.value, PipelineExecutionError)
    assert info.value.step_name == "over_quota" and info.value.condition == "baseline"
    assert info.value.used == 12  # the original's attributes are there too
    assert isinstance(info.value.original_exception, QuotaExceeded)
