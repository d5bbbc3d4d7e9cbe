"""RayExecution on a real local Ray: connection rules, resources, retries, crashes, batching, optimize fan-out.

The behavioural suite (tests/test_engine.py and friends) also runs on Ray through the
``execution`` fixture; this file covers what only Ray has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ray_steps import LOCK, crash_worker, expensive, flaky_once, hold_lock, record, slow, zero
from seed_blocks import requires_seeds

from crystallize import (
    Experiment,
    GridSearchOptimizer,
    Objective,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    SerializationError,
    treatment,
)
from crystallize.errors import ExecutionError

ray = pytest.importorskip("ray")
from crystallize_ray import RayExecution  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_session")


def experiment(*steps, plugins=(), replicates: int = 6, treatments=(), name: str = "ray_test") -> Experiment:
    return Experiment(
        datasource=zero(),
        pipeline=Pipeline(list(steps)),
        plugins=[SeedPlugin(seed=11), *plugins],
        treatments=list(treatments),
        replicates=replicates,
        name=name,
    )


def test_uses_the_running_ray_and_leaves_it_running() -> None:
    result = experiment(record(), plugins=[RayExecution(progress=False)]).run()
    assert result.provenance["executor"]["connected_as"] == "existing"
    assert result.metrics.baseline.metrics["value"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert ray.is_initialized()


def test_short_replicates_are_batched_into_few_tasks() -> None:
    result = experiment(
        record(), plugins=[RayExecution(progress=False)], replicates=1000, treatments=[treatment("t", {"delta": 1})]
    ).run()
    assert result.failed == 0
    tasks = result.provenance["executor"]["tasks"]
    assert 1 <= tasks <= 200, tasks
    assert result.metrics.treatments["t"].metrics["value"] == [float(r + 1) for r in range(1000)]


def test_fixed_batch_size_is_honoured() -> None:
    result = experiment(record(), plugins=[RayExecution(progress=False, batch_size=1)], replicates=5).run()
    assert result.provenance["executor"]["tasks"] == 5


def test_a_request_no_node_can_meet_fails_before_running(tmp_path: Path) -> None:
    exp = experiment(record(), plugins=[RayExecution(progress=False, num_gpus=1)])
    with pytest.raises(ExecutionError, match="No node in the Ray cluster"):
        exp.run()
    exp = experiment(record(), plugins=[RayExecution(progress=False, resources={"tpu": 1})])
    with pytest.raises(ExecutionError, match="tpu"):
        exp.run()


def test_unpicklable_step_is_named_before_anything_is_submitted() -> None:
    exp = experiment(hold_lock(lock=LOCK), plugins=[RayExecution(progress=False)])
    with pytest.raises(SerializationError) as caught:
        exp.run()
    assert "hold_lock" in str(caught.value) and "resource_factory" in str(caught.value)


def test_listed_exceptions_are_retried_and_others_are_recorded(tmp_path: Path) -> None:
    retried = experiment(
        flaky_once(marker_dir=str(tmp_path / "a")),
        plugins=[RayExecution(progress=False, retry_exceptions=[ConnectionError])],
    )
    (tmp_path / "a").mkdir()
    result = retried.run()
    assert result.failed == 0
    assert result.metrics.baseline.metrics["ok"] == [1] * 6

    (tmp_path / "b").mkdir()
    not_listed = experiment(
        flaky_once(marker_dir=str(tmp_path / "b"), error="ValueError"),
        plugins=[RayExecution(progress=False, retry_exceptions=[ConnectionError])],
    )
    result = not_listed.run()
    assert sorted(result.replicate_errors["baseline"]) == list(range(6))
    error = result.replicate_errors["baseline"][0]
    assert error.step == "flaky_once" and error.exception_type == "ValueError" and error.attempts == 1


def test_a_worker_crash_is_retried_by_ray(tmp_path: Path) -> None:
    result = experiment(
        crash_worker(marker_dir=str(tmp_path)), plugins=[RayExecution(progress=False)], replicates=6
    ).run()
    assert result.failed == 0
    assert (tmp_path / "crashed-baseline-3").exists()
    assert result.metrics.baseline.metrics["survived"] == [1] * 6


def test_a_replicate_that_always_crashes_becomes_one_error_and_the_rest_complete(tmp_path: Path) -> None:
    result = experiment(
        crash_worker(marker_dir=str(tmp_path), always=True),
        plugins=[RayExecution(progress=False, max_retries=1, batch_size=6)],
        replicates=6,
    ).run()
    assert list(result.replicate_errors) == ["baseline"]
    assert list(result.replicate_errors["baseline"]) == [3]
    error = result.replicate_errors["baseline"][3]
    assert error.stage == "ray" and "worker" in error.message
    assert result.metrics.baseline.replicates["survived"] == [0, 1, 2, 4, 5]


def test_optimizer_trials_fan_out_across_the_cluster() -> None:
    seen: list[dict[str, float]] = []

    class Recording(GridSearchOptimizer):
        def tell(self, objective_values: dict[str, float]) -> None:
            seen.append(dict(objective_values))
            super().tell(objective_values)

    search = Recording({"delta": [3.0, 1.0, 2.0, 0.5]}, Objective("value", "minimize"), batch_size=2)
    exp = experiment(record(), plugins=[RayExecution(progress=False)])
    best = exp.optimize(search, num_trials=2, replicates_per_trial=3)
    assert [len(s) for s in seen] == [2, 2]  # batch_size=2: two candidates per ask, run side by side
    assert dict(best.apply_map) == {"delta": 0.5}


def test_replicates_of_one_run_use_both_workers() -> None:
    # 0.5 s replicates: long enough that a worker Ray restarts after the crash tests is up in time.
    result = experiment(slow(seconds=0.5), plugins=[RayExecution(progress=False, batch_size=1)], replicates=6).run()
    assert len(set(result.metrics.baseline.metrics["pid"])) == 2


def test_ray_and_serial_agree_on_metrics_with_a_fixed_seed() -> None:
    ray_result = experiment(record(), plugins=[RayExecution(progress=False)], replicates=20).run()
    serial_result = experiment(record(), plugins=[SerialExecution(progress=False)], replicates=20).run()
    assert ray_result.to_pandas().equals(serial_result.to_pandas())


UNREACHABLE = textwrap.dedent(
    """
    import socket, sys, time
    sys.path.insert(0, {tests!r})
    from ray_steps import zero, record
    from crystallize import Experiment, Pipeline
    from crystallize_ray import RayExecution
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
    address = f"127.0.0.1:{{port}}"
    exp = Experiment(datasource=zero(), pipeline=Pipeline([record()]), plugins=[RayExecution(address=address)])
    started = time.monotonic()
    try:
        exp.run()
    except Exception as exc:
        print("ELAPSED", round(time.monotonic() - started, 2))
        print("ERROR", type(exc).__name__, address in str(exc), str(exc)[:200])
    """
)


def test_an_address_where_nothing_answers_fails_fast_naming_it(tmp_path: Path) -> None:
    script = UNREACHABLE.format(tests=str(Path(__file__).parent))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    ).stdout
    assert time.monotonic() - started < 60
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    assert float(lines["ELAPSED"]) < 30
    assert lines["ERROR"].startswith("ExecutionError True"), out


def test_a_cacheable_result_is_computed_once_per_run_and_shared_through_the_object_store(tmp_path: Path) -> None:
    log = tmp_path / "computed.log"
    exp = experiment(
        expensive(log=str(log)), record(), plugins=[RayExecution(progress=False, batch_size=1)], replicates=8
    )
    result = exp.run()
    assert result.failed == 0
    assert len(log.read_text().splitlines()) == 1  # two workers asked at once; one computed, the other waited
    assert result.metrics.baseline.metrics["expensive"] == [1] * 8  # metrics come back with the shared result
    assert result.provenance["steps"]["baseline"]["expensive"]["cache_hits"] == 7
    again = exp.run()
    assert len(log.read_text().splitlines()) == 1  # persisted to the cache store for later runs
    assert again.provenance["steps"]["baseline"]["expensive"]["cache_hits"] == 8


def test_runs_share_one_broker_and_each_run_leaves_nothing_in_it(tmp_path: Path, monkeypatch) -> None:
    import ray

    from crystallize_ray import shared_cache

    log = tmp_path / "computed.log"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_DIR", str(tmp_path / "cache-a"))
    first = experiment(expensive(log=str(log)), record(), plugins=[RayExecution(progress=False)], replicates=4)
    assert first.run().failed == 0
    broker = shared_cache._SHARED
    assert broker is not None
    deadline = time.monotonic() + 10  # the broker forgets a run in the background once it ended
    while ray.get(broker.stats.remote())["shared_results"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.get(broker.stats.remote())["shared_results"] == 0  # the run's results left with it
    # Another run, with a cache folder of its own: nothing of the first run's reaches it through the broker.
    monkeypatch.setenv("CRYSTALLIZE_CACHE_DIR", str(tmp_path / "cache-b"))
    second = experiment(expensive(log=str(log)), record(), plugins=[RayExecution(progress=False)], replicates=4)
    result = second.run()
    assert shared_cache._SHARED is broker  # the same actor served both runs
    assert len(log.read_text().splitlines()) == 2  # computed once in each run, shared within it
    assert result.provenance["steps"]["baseline"]["expensive"]["cache_hits"] == 3


@requires_seeds
def test_seed_001_runs_with_ray_execution_in_place_of_parallel_execution() -> None:
    from test_seeds import run_seed

    swap = {
        "from crystallize import Experiment, Pipeline, ParallelExecution": (
            "from crystallize import Experiment, Pipeline, ParallelExecution\nfrom crystallize_ray import RayExecution"
        ),
        "ParallelExecution(max_workers=4)": "RayExecution(progress=False)",
    }
    on_ray = run_seed("001", swap)
    assert type(on_ray["experiment"].plugins[-1]).__name__ == "RayExecution"
    assert on_ray["result"].provenance["executor"]["executor"] == "ray"
    on_threads = run_seed("001")["result"]
    assert on_ray["result"].to_pandas().equals(on_threads.to_pandas())
    assert (
        on_ray["result"].get_hypothesis("order_by_p_value").results
        == on_threads.get_hypothesis("order_by_p_value").results
    )


@requires_seeds
def test_seed_000_optimize_run_apply_on_ray_matches_serial_with_a_fixed_seed() -> None:
    from test_seeds import run_seed

    swap = {
        "exp = Experiment(datasource=datasource, pipeline=pipeline)": (
            "from crystallize import SeedPlugin, SerialExecution\nfrom crystallize_ray import RayExecution\n"
            "exp = Experiment(datasource=datasource, pipeline=pipeline, plugins=[SeedPlugin(seed=5), EXECUTION])"
        )
    }
    results = {}
    for name, execution in (("serial", "SerialExecution()"), ("ray", "RayExecution(progress=False)")):
        ns = run_seed("000", {**swap, "EXECUTION": execution})
        results[name] = ns
    assert results["ray"]["result"].provenance["executor"]["executor"] == "ray"
    assert dict(results["ray"]["best_treatment"].apply_map) == dict(results["serial"]["best_treatment"].apply_map)
    assert results["ray"]["optimizer"].results == results["serial"]["optimizer"].results
    assert results["ray"]["result"].to_pandas().equals(results["serial"]["result"].to_pandas())
    assert results["ray"]["output"] == results["serial"]["output"]


def test_runtime_env_reaches_the_workers_when_ray_was_already_up() -> None:
    from ray_steps import read_env

    exp = experiment(
        read_env(name="CRYSTALLIZE_TEST_FLAG"),
        plugins=[RayExecution(progress=False, runtime_env={"env_vars": {"CRYSTALLIZE_TEST_FLAG": "shipped"}})],
        replicates=2,
    )
    result = exp.run()
    assert result.metrics.baseline.metrics["env"] == ["shipped", "shipped"]
