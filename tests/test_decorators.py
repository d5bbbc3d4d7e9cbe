"""The user-facing decorators: steps, datasources, treatments, verifiers, hypotheses, resources."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator

import cloudpickle
import pytest

from crystallize import (
    DataSource,
    FrozenContext,
    Hypothesis,
    Pipeline,
    PipelineStep,
    Treatment,
    data_source,
    exit_step,
    hypothesis,
    inject_from_ctx,
    pipeline,
    pipeline_step,
    resource_factory,
    treatment,
    verifier,
)
from crystallize.resources import ResourceFactory, clear_resources

# --- @pipeline_step -------------------------------------------------------------


@pipeline_step()
def add_delta(data: int, ctx: FrozenContext, *, delta: int = 1) -> int:
    return data + delta


@pipeline_step()
def scale(data: int, ctx: FrozenContext, *, factor: int) -> int:
    return data * factor


@pipeline_step
def bare_double(data: int, ctx: FrozenContext) -> int:
    return data * 2


@pipeline_step(cacheable=True)
def cached_step(data: int, ctx: FrozenContext, *, offset: int = 0) -> int:
    return data + offset


def test_factory_returns_a_pipeline_step() -> None:
    step = add_delta()
    assert isinstance(step, PipelineStep)
    assert step(1, FrozenContext()) == 2


def test_default_used_when_not_explicit_nor_in_ctx() -> None:
    assert add_delta()(10, FrozenContext()) == 11


def test_ctx_value_used_when_not_explicit() -> None:
    assert add_delta()(10, FrozenContext({"delta": 5})) == 15


def test_explicit_value_wins_over_ctx() -> None:
    assert add_delta(delta=100)(10, FrozenContext({"delta": 5})) == 110


def test_unknown_explicit_param_raises_at_factory_call() -> None:
    with pytest.raises(TypeError, match="bogus"):
        add_delta(bogus=3)


def test_missing_param_raises_when_step_runs() -> None:
    step = scale()  # creating the step is fine: the value may come from the context later
    with pytest.raises(TypeError, match="factor"):
        step(2, FrozenContext())
    assert step(2, FrozenContext({"factor": 4})) == 8


def test_positional_args_to_factory_raise() -> None:
    with pytest.raises(TypeError, match="keyword"):
        add_delta(5)


def test_bare_decorator_works() -> None:
    step = bare_double()
    assert isinstance(step, PipelineStep)
    assert step(21, FrozenContext()) == 42
    assert step.cacheable is False


def test_cacheable_flag() -> None:
    assert cached_step().cacheable is True
    assert add_delta().cacheable is False


def test_step_name_and_params() -> None:
    step = add_delta(delta=3)
    assert step.name == "add_delta"
    assert step.params == {"delta": 3}
    assert add_delta().params == {}  # defaults and ctx values are not explicit params
    assert scale(factor=2).name == "scale"


def test_params_is_a_copy() -> None:
    step = add_delta(delta=3)
    step.params["delta"] = 99
    assert step(0, FrozenContext()) == 3


def test_factory_keeps_function_metadata() -> None:
    assert add_delta.__name__ == "add_delta"
    assert add_delta.step_function(1, None, delta=2) == 3


def test_ctx_param_found_by_annotation() -> None:
    @pipeline_step()
    def uses_annotation(data: int, context_obj: FrozenContext, *, k: int = 0) -> int:
        assert isinstance(context_obj, FrozenContext)
        return data + k

    assert uses_annotation()(1, FrozenContext({"k": 2})) == 3


def test_step_without_ctx_param() -> None:
    @pipeline_step()
    def no_ctx(data: int, *, k: int = 1) -> int:
        return data - k

    assert no_ctx()(5, FrozenContext({"k": 2})) == 3


def test_steps_from_one_factory_are_independent() -> None:
    a, b = add_delta(delta=1), add_delta(delta=2)
    assert a is not b
    assert a(0, FrozenContext()) == 1
    assert b(0, FrozenContext()) == 2
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == add_delta(delta=1).fingerprint


def test_exit_step_marks_step_and_pipeline_exit_index() -> None:
    marked = exit_step(add_delta(delta=2))
    assert marked.is_exit is True
    assert add_delta().is_exit is False  # marking one instance does not mark the class
    pipe = Pipeline([add_delta(), marked, scale(factor=2)])
    assert pipe.exit_index() == 1
    assert Pipeline([add_delta(), scale(factor=2)]).exit_index() == 1  # last step when unmarked
    assert Pipeline([exit_step(add_delta()), add_delta(), add_delta()]).exit_index() == 0


def test_pipeline_helper_runs_steps_in_order() -> None:
    pipe = pipeline(add_delta(delta=1), scale(factor=10))
    assert isinstance(pipe, Pipeline)
    assert pipe.signature() == "add_delta -> scale"
    assert pipe.run(1, FrozenContext()) == 20


def test_pipeline_run_records_step_metrics() -> None:
    @pipeline_step()
    def with_metric(data: int, ctx: FrozenContext) -> tuple[int, dict]:
        return data + 1, {"seen": data}

    ctx = FrozenContext()
    assert Pipeline([with_metric(), with_metric()]).run(1, ctx) == 3
    assert ctx.metrics["seen"] == (1, 2)


def test_function_step_round_trips_through_cloudpickle() -> None:
    step = add_delta(delta=7)
    restored = cloudpickle.loads(cloudpickle.dumps(step))
    assert restored.name == "add_delta"
    assert restored.params == {"delta": 7}
    assert restored(1, FrozenContext()) == 8
    assert restored.fingerprint == step.fingerprint


def test_async_step_produces_a_coroutine() -> None:
    @pipeline_step()
    async def slow_add(data: int, ctx: FrozenContext, *, delta: int = 1) -> int:
        await asyncio.sleep(0)
        return data + delta

    step = slow_add(delta=4)
    assert step.signature.is_async is True
    assert add_delta().signature.is_async is False
    result = step(1, FrozenContext())
    assert inspect.iscoroutine(result)
    assert asyncio.run(result) == 5


# --- @data_source --------------------------------------------------------------------


@data_source
def numbers(ctx: FrozenContext, *, start: int = 0, count: int = 3) -> list[int]:
    return list(range(start, start + count))


@data_source()
def constant(ctx: FrozenContext, *, value: int) -> int:
    return value


def test_data_source_without_parentheses() -> None:
    source = numbers()
    assert isinstance(source, DataSource)
    assert source.name == "numbers"
    assert source.fetch(FrozenContext()) == [0, 1, 2]


def test_data_source_with_parentheses() -> None:
    source = constant(value=7)
    assert isinstance(source, DataSource)
    assert source.fetch(FrozenContext()) == 7
    assert source.params == {"value": 7}


def test_data_source_injected_params() -> None:
    assert numbers().fetch(FrozenContext({"start": 10})) == [10, 11, 12]
    assert numbers(count=1).fetch(FrozenContext({"start": 5, "count": 9})) == [5]
    assert constant().fetch(FrozenContext({"value": 3})) == 3
    with pytest.raises(TypeError, match="value"):
        constant().fetch(FrozenContext())


def test_data_source_rejects_unknown_and_positional() -> None:
    with pytest.raises(TypeError, match="nope"):
        numbers(nope=1)
    with pytest.raises(TypeError):
        numbers(1)


# --- treatment -----------------------------------------------------------------------------


def test_treatment_from_mapping() -> None:
    boost_total = treatment("boost_total", {"delta": 10})
    assert isinstance(boost_total, Treatment)
    assert boost_total.name == "boost_total"
    assert boost_total() is boost_total
    ctx = FrozenContext()
    boost_total.apply(ctx)
    assert ctx["delta"] == 10


def test_treatment_mapping_is_copied() -> None:
    mapping = {"delta": 1}
    t = treatment("t", mapping)
    mapping["delta"] = 2
    assert dict(t.apply_map) == {"delta": 1}


def test_treatment_decorator_form() -> None:
    @treatment("double_lr")
    def double_lr(ctx: FrozenContext) -> None:
        ctx.add("lr", 0.2)
        ctx.add("note", "doubled")

    assert isinstance(double_lr, Treatment)
    assert double_lr.name == "double_lr"
    assert double_lr() is double_lr
    assert not double_lr.is_mapping
    ctx = FrozenContext({"other": 1})
    double_lr.apply(ctx)
    assert ctx["lr"] == 0.2
    assert ctx["note"] == "doubled"


def test_treatment_cannot_rebind_existing_key() -> None:
    from crystallize import ContextMutationError

    t = treatment("t", {"delta": 1})
    ctx = FrozenContext({"delta": 0})
    with pytest.raises(ContextMutationError, match="delta"):
        t.apply(ctx)


# --- verifier & hypothesis ----------------------------------------------------------------


@verifier
def mean_diff(baseline: dict, treatment: dict, *, alpha: float = 0.05, metric: str = "x") -> dict:
    b, t = baseline[metric], treatment[metric]
    diff = sum(t) / len(t) - sum(b) / len(b)
    return {"diff": diff, "alpha": alpha, "p_value": alpha, "seen": sorted(baseline)}


def test_verifier_factory_binds_params() -> None:
    bound = mean_diff(alpha=0.01)
    out = bound({"x": [1, 1]}, {"x": [3, 3]})
    assert out["alpha"] == 0.01
    assert out["diff"] == 2


def test_verifier_defaults_and_direct_call() -> None:
    assert mean_diff()({"x": [0]}, {"x": [1]})["alpha"] == 0.05
    assert mean_diff({"x": [0]}, {"x": [2]}, alpha=0.2) == {
        "diff": 2.0,
        "alpha": 0.2,
        "p_value": 0.2,
        "seen": ["x"],
    }


def test_verifier_passes_baseline_and_treatment_in_order() -> None:
    seen = []

    @verifier
    def spy(baseline: dict, treatment: dict, *, tag: str = "") -> dict:
        seen.append((baseline, treatment, tag))
        return {}

    spy(tag="t")({"b": [1]}, {"t": [2]})
    assert seen == [({"b": [1]}, {"t": [2]}, "t")]


def test_verifier_rejects_one_positional_arg() -> None:
    with pytest.raises(TypeError):
        mean_diff(0.01)


def test_bound_verifier_pickles() -> None:
    # the engine ships specs with cloudpickle
    restored = cloudpickle.loads(cloudpickle.dumps(mean_diff(alpha=0.3)))
    assert restored({"x": [0]}, {"x": [0]})["alpha"] == 0.3


def test_hypothesis_named_after_ranker() -> None:
    @hypothesis(verifier=mean_diff(alpha=0.01), metrics="x")
    def biggest_gain(result: dict) -> float:
        return -result["diff"]

    assert isinstance(biggest_gain, Hypothesis)
    assert biggest_gain.name == "biggest_gain"
    assert biggest_gain.metrics_spec == "x"
    out = biggest_gain.verify({"x": [1.0]}, {"x": [4.0]})
    assert out["diff"] == 3.0 and out["alpha"] == 0.01
    assert biggest_gain.ranker(out) == -3.0


def test_hypothesis_explicit_name() -> None:
    @hypothesis(verifier=mean_diff(), metrics=["x"], name="custom")
    def ranker(result: dict) -> float:
        return 0.0

    assert ranker.name == "custom"


# --- resource_factory -----------------------------------------------------------------------


@pytest.fixture
def fresh_resources() -> Iterator[None]:
    clear_resources()
    yield
    clear_resources()


def make_lock() -> threading.Lock:
    return threading.Lock()


def test_resource_factory_builds_once_per_process(fresh_resources: None) -> None:
    calls = []

    def build() -> threading.Lock:
        calls.append(1)
        return threading.Lock()

    factory = resource_factory(build)
    assert isinstance(factory, ResourceFactory)
    first = factory()
    second = factory(FrozenContext())
    assert first is second
    assert len(calls) == 1


def test_resource_factory_with_parentheses_and_key(fresh_resources: None) -> None:
    @resource_factory(key="my-lock")
    def lock_builder() -> threading.Lock:
        return threading.Lock()

    assert isinstance(lock_builder, ResourceFactory)
    assert lock_builder.key == "my-lock"
    lock = lock_builder()
    assert hasattr(lock, "acquire")


def test_resource_factory_may_take_ctx(fresh_resources: None) -> None:
    factory = resource_factory(lambda ctx: ("built", ctx["name"]), key="ctx-aware")
    assert factory(FrozenContext({"name": "db"})) == ("built", "db")


def test_resource_factory_pickles_without_the_built_object(fresh_resources: None) -> None:
    factory = resource_factory(make_lock, key="pickled-lock")
    built = factory()
    with pytest.raises(TypeError):
        cloudpickle.dumps(built)  # the resource itself cannot travel
    payload = cloudpickle.dumps(factory)  # but the factory can, after building
    loaded = cloudpickle.loads(payload)
    assert isinstance(loaded, ResourceFactory)
    assert loaded.key == factory.key
    assert "_CACHE" not in vars(loaded) and set(vars(loaded)) == {"factory", "key"}
    # same process: the loaded copy shares the per-process resource
    assert loaded() is built
    # a process without the resource (simulated by clearing) builds its own
    clear_resources()
    rebuilt = loaded()
    assert rebuilt is not built
    assert hasattr(rebuilt, "acquire") and rebuilt.acquire(blocking=False)
    rebuilt.release()


def test_resource_factory_with_lambda_pickles(fresh_resources: None) -> None:
    factory = resource_factory(lambda: threading.Lock(), key="lambda-lock")
    factory()
    loaded = cloudpickle.loads(cloudpickle.dumps(factory))
    clear_resources()
    assert hasattr(loaded(), "acquire")


def test_distinct_lambdas_in_one_scope_are_distinct_resources(fresh_resources: None) -> None:
    first = resource_factory(lambda: "first")
    second = resource_factory(lambda: "second")
    assert first() == "first"
    assert second() == "second"
    # the same function wrapped twice still shares one resource per process
    assert resource_factory(make_lock)() is resource_factory(make_lock)()


# --- inject_from_ctx ---------------------------------------------------------------------------


def test_inject_from_ctx_fills_params_from_ctx() -> None:
    @inject_from_ctx
    def helper(data: list, ctx: FrozenContext, scale: int = 1, shift: int = 0) -> list:
        return [x * scale + shift for x in data]

    ctx = FrozenContext({"scale": 3})
    assert helper([1, 2], ctx) == [3, 6]
    assert helper([1, 2], ctx, scale=10, shift=1) == [11, 21]  # explicit wins
    assert helper.__name__ == "helper"
    assert helper.__wrapped__([1], None, 2, 0) == [2]


def test_inject_from_ctx_missing_value_raises() -> None:
    @inject_from_ctx
    def needs(data: int, ctx: FrozenContext, required_value: int) -> int:
        return data + required_value

    with pytest.raises(TypeError, match="required_value"):
        needs(1, FrozenContext())
    assert needs(1, FrozenContext({"required_value": 2})) == 3
