"""Smaller parts of Crystallize 0.27's API that code written for it relies on (issue 11, item 9)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crystallize import (
    ArtifactPlugin,
    BasePlugin,
    Experiment,
    FrozenContext,
    LoggingPlugin,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    data_source,
    pipeline_step,
    resource_factory,
    verifier,
)
from crystallize.optimizers import GridSearchOptimizer, Objective
from crystallize.resources import clear_resources


@data_source
def numbers(ctx: Any) -> list[int]:
    return [1, 2, 3]


@pipeline_step()
def add(data: list[int], ctx: Any, delta: int = 1) -> list[int]:
    out = [x + delta for x in data]
    ctx.metrics.add("total", sum(out))
    ctx.metrics.add("seed_seen", ctx["seed_used"])
    return out


def serial() -> SerialExecution:
    return SerialExecution(progress=False)


# ---------------------------------------------------------------- compute_hash


def test_compute_hash_is_in_utils_cache_and_stable_across_processes() -> None:
    from crystallize.utils.cache import compute_hash

    value = {"b": [1, 2.5, "x"], "a": {"nested": (1, 2)}}
    digest = compute_hash(value)
    assert isinstance(digest, str) and len(digest) >= 32
    assert compute_hash({"a": {"nested": (1, 2)}, "b": [1, 2.5, "x"]}) == digest  # key order does not matter
    assert compute_hash({**value, "b": [1, 2.5, "y"]}) != digest
    code = (
        "from crystallize.utils.cache import compute_hash;"
        "print(compute_hash({'b': [1, 2.5, 'x'], 'a': {'nested': (1, 2)}}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert other.stdout.strip() == digest  # not hash(), not pickle bytes: the same in another interpreter


# ---------------------------------------------------------------- provenance seeds


def test_provenance_seeds_are_a_list_of_replicate_seeds_per_condition() -> None:
    experiment = Experiment(
        numbers(),
        Pipeline([add()]),
        [SeedPlugin(seed=5), serial()],
        name="seeds",
        treatments=[Treatment("more", {"delta": 2})],
        replicates=3,
    )
    result = experiment.run()
    seeds = result.provenance["seeds"]
    assert set(seeds) == {"baseline", "more"}
    for condition, metrics in (("baseline", result.metrics.baseline), ("more", result.metrics.treatments["more"])):
        assert isinstance(seeds[condition], list)
        assert seeds[condition] == metrics.metrics["seed_seen"]  # replicate order, the seeds the steps saw
    assert seeds["baseline"] == seeds["more"] and len(set(seeds["baseline"])) == 3
    assert result.provenance["seeds_by_replicate"]["more"] == dict(enumerate(seeds["more"]))


# ---------------------------------------------------------------- resource_factory in initial_ctx


class Connection:
    """Stands for a client that can be neither copied nor pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: Any) -> Connection:
        raise AssertionError("a resource must never be deep-copied")


BUILT: list[Connection] = []


def connect(ctx: Any) -> Connection:
    connection = Connection()
    BUILT.append(connection)
    return connection


@pipeline_step()
def query(data: list[int], ctx: Any, connection: Any) -> list[int]:
    assert isinstance(connection, Connection), type(connection)
    ctx.metrics.add("connection", id(connection))
    return data


@pytest.fixture
def fresh_resources() -> Iterator[None]:
    clear_resources()
    BUILT.clear()
    yield
    clear_resources()
    BUILT.clear()


def test_a_resource_factory_in_initial_ctx_is_injected_as_the_resource(fresh_resources: None) -> None:
    factory = resource_factory(connect, key="compat-connection")
    experiment = Experiment(
        numbers(),
        Pipeline([query()]),
        [serial()],
        name="resources",
        initial_ctx={"connection": factory},
        replicates=3,
    )
    result = experiment.run()
    assert result.errors == {}  # the step got a Connection, and nothing deep-copied it
    seen = result.metrics.baseline.metrics["connection"]
    assert len(BUILT) == 1 and seen == [id(BUILT[0])] * 3  # built once in this process, then reused
    assert experiment.initial_ctx["connection"] is factory
    shared = FrozenContext._trusted({"connection": factory}, shared=["connection"])
    assert shared["connection"] is factory  # a plain read is the factory itself (not a copy); injection builds it


# ---------------------------------------------------------------- verifiers


def test_verifier_factories_bind_defaults_and_check_parameters() -> None:
    @verifier
    def gap(baseline: Any, treatment: Any, *, metric: str, alpha: float = 0.05) -> dict[str, Any]:
        return {"metric": metric, "alpha": alpha, "gap": sum(treatment[metric]) - sum(baseline[metric])}

    bound = gap(metric="total")
    assert bound({"total": [1, 2]}, {"total": [4]}) == {"metric": "total", "alpha": 0.05, "gap": 1}
    with pytest.raises(TypeError, match="Missing parameters: metric"):
        gap(alpha=0.1)
    with pytest.raises(TypeError, match="Unknown parameters: alhpa"):
        gap(metric="total", alhpa=0.1)

    @verifier
    def open_ended(baseline_samples: Any, treatment_samples: Any, **options: Any) -> dict[str, Any]:
        return dict(options)

    assert open_ended(anything=1)({}, {}) == {"anything": 1}  # **options takes any name


# ---------------------------------------------------------------- apply() hooks


class RunHooks(BasePlugin):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.result: Any = None

    def before_run(self, experiment: Any) -> None:
        self.calls.append("before_run")

    def after_run(self, experiment: Any, result: Any) -> None:
        self.calls.append("after_run")
        self.result = result


def test_apply_runs_before_run_and_after_run_with_the_replicates_result() -> None:
    hooks = RunHooks()
    experiment = Experiment(numbers(), Pipeline([add(delta=10)]), [hooks, serial()], name="applied")
    assert experiment.apply(seed=3) == [11, 12, 13]
    assert hooks.calls == ["before_run", "after_run"]
    assert hooks.result.metrics.baseline.metrics["total"] == [36]
    assert not Path("data/applied").exists() or not any(Path("data/applied").glob("v*/run.json"))


# ---------------------------------------------------------------- LoggingPlugin


def test_a_bad_logging_level_is_refused_when_the_plugin_is_made() -> None:
    with pytest.raises(ValueError, match="VERBOSE") as info:
        LoggingPlugin(log_level="VERBOSE")
    assert "DEBUG" in str(info.value)  # says what is accepted
    with pytest.raises(ValueError, match="not a logging level"):
        LoggingPlugin(log_level=None)  # type: ignore[arg-type]
    assert LoggingPlugin(log_level="debug").level == logging.DEBUG
    assert LoggingPlugin(log_level=logging.WARNING).level == logging.WARNING  # type: ignore[arg-type]


# ---------------------------------------------------------------- aoptimize


def test_aoptimize_is_optimize_for_async_code() -> None:
    def search() -> Experiment:
        return Experiment(numbers(), Pipeline([add()]), [SeedPlugin(seed=1), serial()], name="search")

    async def main() -> Treatment:
        optimizer = GridSearchOptimizer({"delta": [3, 1, 2]}, Objective("total", direction="minimize"))
        return await search().aoptimize(optimizer, num_trials=3)

    best = asyncio.run(main())
    assert best.apply_map == {"delta": 1}
    synchronous = search().optimize(
        GridSearchOptimizer({"delta": [3, 1, 2]}, Objective("total", direction="minimize")), num_trials=3
    )
    assert synchronous.apply_map == best.apply_map


# ---------------------------------------------------------------- FrozenContext, ArtifactPlugin, __acall__


def test_frozen_context_takes_its_logger_positionally() -> None:
    mine = logging.getLogger("compat.mine")
    ctx = FrozenContext({"a": 1}, mine)
    assert ctx.logger is mine and ctx["a"] == 1


def test_artifact_plugin_accepts_big_file_threshold_mb_in_0_27_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYSTALLIZE_BIG_FILE_THRESHOLD_MB", raising=False)
    plugin = ArtifactPlugin("data", True, 3, 10)  # 0.27's order: root_dir, versioned, artifact_retention, threshold
    assert plugin.big_file_threshold_mb == 10
    assert plugin.max_artifact_bytes is None  # the 4th positional is not a 10-byte artifact limit
    assert ArtifactPlugin(big_file_threshold_mb=0.5).big_file_threshold_mb == 0.5
    assert ArtifactPlugin().big_file_threshold_mb is None
    monkeypatch.setenv("CRYSTALLIZE_BIG_FILE_THRESHOLD_MB", "25")
    assert ArtifactPlugin().big_file_threshold_mb == 25
    monkeypatch.setenv("CRYSTALLIZE_BIG_FILE_THRESHOLD_MB", "lots")
    with pytest.raises(ValueError, match="CRYSTALLIZE_BIG_FILE_THRESHOLD_MB"):
        ArtifactPlugin()
    with pytest.raises(ValueError, match="big_file_threshold_mb"):
        ArtifactPlugin(big_file_threshold_mb=-1)
    experiment = Experiment(numbers(), Pipeline([add()]), [ArtifactPlugin(big_file_threshold_mb=1), serial()])
    assert experiment.run().errors == {}


@pipeline_step()
async def slow_double(data: list[int], ctx: Any) -> list[int]:
    await asyncio.sleep(0)
    return [2 * x for x in data]


def test_steps_have_an_acall_for_sync_and_async_steps() -> None:
    ctx = FrozenContext({"seed_used": 0})
    assert asyncio.run(add(delta=1).__acall__([1, 2], ctx)) == [2, 3]
    assert asyncio.run(slow_double().__acall__([1, 2], ctx)) == [2, 4]


def test_a_type_error_inside_a_resource_factory_is_not_retried_without_ctx(fresh_resources: None) -> None:
    calls: list[Any] = []

    def broken(ctx: Any) -> Any:
        calls.append(ctx)
        raise TypeError("the client library rejected an option")

    with pytest.raises(TypeError, match="rejected an option"):
        resource_factory(broken, key="compat-broken")(FrozenContext({}))
    assert len(calls) == 1  # run once, with its context; not again as broken()
    assert resource_factory(lambda: "no ctx needed", key="compat-no-ctx")(FrozenContext({})) == "no ctx needed"
