"""Bad input gets a CrystallizeError that names the culprit and what to do, before any replicate runs
where that can be known: reserved context keys, treatments that override initial_ctx, optimizers that
score nothing or ask for garbage, names a store cannot reopen, unusable data roots, oversized artifacts,
runs that fail before their first replicate (no version left behind), and pool workers that outlive a
killed driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from s3_server import moto_endpoint  # noqa: F401 - the S3 side of the store_root fixture

from crystallize import (
    Artifact,
    ArtifactPlugin,
    Experiment,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    Treatment,
    data_source,
    load_run,
    pipeline_step,
)
from crystallize.errors import (
    ContextMutationError,
    CrystallizeError,
    ExecutionError,
    OptimizerError,
    RunNotFoundError,
    SerializationError,
    ValidationError,
)
from crystallize.execution.base import Executor
from crystallize.optimizers import BaseOptimizer, GridSearchOptimizer, Objective
from crystallize.plugins.execution import ExecutionPlugin
from crystallize.steps import PipelineStep
from crystallize.store import Store
from crystallize.store.records import list_versions

TESTS = Path(__file__).parent
RAN = "ran.log"  # every replicate that got as far as a step appends a line: "nothing ran" is checkable


@data_source
def seven(ctx: Any) -> int:
    return 7


@pipeline_step()
def score(data: int, ctx: Any, delta: int = 0) -> tuple[int, dict[str, Any]]:
    with open(RAN, "a") as log:
        log.write(f"{ctx['condition']} {ctx['replicate']}\n")
    return data + delta, {"loss": float(data + delta)}


@pipeline_step()
def adds_key(data: int, ctx: Any) -> int:
    ctx.add("made_by_step", 1)
    return data


def ran() -> list[str]:
    return Path(RAN).read_text().splitlines() if Path(RAN).exists() else []


def experiment(*steps: Any, name: str = "bad", **options: Any) -> Experiment:
    plugins = options.pop("plugins", [SerialExecution(progress=False)])
    return Experiment(seven(), Pipeline(list(steps) or [score()]), plugins=plugins, name=name, **options)


def versions(name: str = "bad", root: str = "data") -> list[int]:
    return list_versions(Store(os.path.abspath(root)), name)


# ------------------------------------------------------------------ 1. reserved context keys


@pytest.mark.parametrize("key", ["replicate", "condition", "seed_used"])
def test_reserved_keys_in_initial_ctx_or_a_treatment_are_refused_before_anything_runs(key: str) -> None:
    with pytest.raises(ValidationError, match=rf"Experiment 'bad': initial_ctx sets '{key}'.*rename"):
        experiment(initial_ctx={key: 5}).validate()
    with pytest.raises(ValidationError, match=rf"treatment 'sneaky' sets '{key}'.*framework"):
        experiment(treatments=[Treatment("sneaky", {key: 5})]).validate()
    with pytest.raises(ValidationError, match=rf"treatment 'sneaky' sets '{key}'"):
        experiment().run(treatments=[Treatment("sneaky", {"delta": 1, key: 5})])
    optimizer = GridSearchOptimizer({key: [1, 2]}, Objective("loss"))
    with pytest.raises(ValidationError, match=rf"treatment 'grid_0' sets '{key}'"):
        experiment().optimize(optimizer, num_trials=2)
    assert ran() == []
    assert versions() == []  # the optimize session failed before any replicate: nothing left behind
    # the did-you-mean check still knows the framework keys and still catches typos
    experiment(treatments=[Treatment("fine", {"delta": 2})]).validate()
    with pytest.raises(ValidationError, match="did you mean 'delta'"):
        experiment(treatments=[Treatment("typo", {"deltaa": 2})]).validate()


def test_a_step_setup_that_adds_a_reserved_key_is_refused_before_any_replicate() -> None:
    class Sneaky(PipelineStep):
        def setup(self, ctx: Any) -> None:
            ctx.add("seed_used", 1)

        def __call__(self, data: Any, ctx: Any) -> Any:
            return data

    with pytest.raises(ValidationError, match=r"setup\(\) of step 'Sneaky' added \['seed_used'\]"):
        experiment(Sneaky(), score()).run()
    assert ran() == []
    assert versions() == []


# ------------------------------------------------------------------ 2. treatments override initial_ctx


def set_delta(ctx: Any) -> None:
    ctx.add("delta", 5)


def read_then_set_delta(ctx: Any) -> None:
    ctx.add("delta", ctx["delta"] + 4)


def set_delta_twice(ctx: Any) -> None:
    ctx.add("delta", 5)
    ctx.add("delta", 6)


def set_replicate(ctx: Any) -> None:
    ctx.add("replicate", 99)


def test_mapping_and_callable_treatments_both_override_initial_ctx_and_nothing_else() -> None:
    exp = experiment(
        initial_ctx={"delta": 1},
        replicates=2,
        treatments=[
            Treatment("mapping", {"delta": 5}),
            Treatment("callable", set_delta),
            Treatment("derived", read_then_set_delta),
        ],
    )
    result = exp.run()
    assert result.errors == {} or all(not v for v in result.replicate_errors.values()), result.errors
    assert result.metrics.baseline.metrics["loss"] == [8.0, 8.0]
    by_name = result.metrics.treatments
    assert by_name["mapping"].metrics["loss"] == [12.0, 12.0]
    assert by_name["callable"].metrics["loss"] == [12.0, 12.0]  # the same as the mapping
    assert by_name["derived"].metrics["loss"] == [12.0, 12.0]
    assert exp.initial_ctx == {"delta": 1}

    # what the treatment may override is initial_ctx, once: a key it sets twice, a reserved key,
    # or a key a step already added still raises
    exp = experiment(
        score(),
        adds_key(),
        adds_key(),  # the second adds a key the first added
        initial_ctx={"delta": 1},
        treatments=[Treatment("twice", set_delta_twice), Treatment("reserved", set_replicate)],
    )
    result = exp.run()
    twice = result.replicate_errors["twice"][0]
    assert twice.exception_type == ContextMutationError.__name__ and "'delta'" in twice.message
    assert twice.stage == "treatment:twice"
    reserved = result.replicate_errors["reserved"][0]
    assert reserved.exception_type == ContextMutationError.__name__ and "'replicate'" in reserved.message
    baseline = result.replicate_errors["baseline"][0]
    assert baseline.stage == "adds_key" and "'made_by_step'" in baseline.message


# ------------------------------------------------------------------ 3. optimizers


def test_optimize_raises_when_no_trial_recorded_the_objective() -> None:
    exp = experiment(initial_ctx={"delta": 0})
    optimizer = GridSearchOptimizer({"delta": [1, 2, 3]}, Objective("los"))
    with pytest.raises(OptimizerError, match=r"objective metric 'los'.*recorded were: 'loss'.*Did you mean 'loss'"):
        exp.optimize(optimizer, num_trials=3)
    assert len(ran()) == 3  # the trials ran; their records are kept for a look
    assert exp.last_optimization is not None and versions() == [0]


class _Asks(BaseOptimizer):
    def __init__(self, answer: Any) -> None:
        super().__init__(Objective("loss"))
        self.answer = answer

    def ask(self) -> Any:
        return self.answer

    def tell(self, objective_values: dict[str, float]) -> None:
        pass

    def get_best_treatment(self) -> Treatment:
        return Treatment("none")


@pytest.mark.parametrize(
    "answer",
    [None, Treatment("lone", {"delta": 1}), (t for t in [Treatment("gen", {"delta": 1})]), ["not a treatment"]],
    ids=["none", "a-treatment-not-a-list", "generator", "list-of-str"],
)
def test_an_optimizer_asking_for_something_else_than_treatments_is_named(answer: Any) -> None:
    with pytest.raises(OptimizerError, match=r"Experiment 'bad', trial 1: _Asks\.ask\(\) returned"):
        experiment(initial_ctx={"delta": 0}).optimize(_Asks(answer), num_trials=1)
    assert ran() == []
    assert versions() == []
    # an empty list still ends the search quietly
    experiment(initial_ctx={"delta": 0}).optimize(_Asks([]), num_trials=3)


# ------------------------------------------------------------------ 4. names a store cannot reopen

UNREOPENABLE = ["what?", "a#b", "100%", "x" * 256, "é" * 128, "lone\ud800", "ends.", "ends "]


class Named(PipelineStep):
    """A step whose name is chosen, which adds two artifacts with unusual (but valid) names."""

    def __init__(self, label: str) -> None:
        self.label = label

    @property
    def name(self) -> str:
        return self.label

    @property
    def params(self) -> dict[str, Any]:
        return {"label": self.label}

    def __call__(self, data: Any, ctx: Any) -> Any:
        ctx.artifacts.add("résumé v2.txt", f"r{ctx['replicate']}")
        ctx.artifacts.add("sub dir/日本 1.bin", b"\x00\x01")
        return data, {"loss": float(data + ctx.get("delta", 0))}


@pytest.mark.parametrize(
    "name",
    UNREOPENABLE,
    ids=["question", "hash", "percent", "256-bytes", "256-bytes-utf8", "surrogate", "dot", "space"],
)
def test_names_a_store_cannot_reopen_are_refused_in_validate(name: str) -> None:
    with pytest.raises(ValidationError, match=r"experiment name.*cannot be used as a folder or file name"):
        experiment(name=name).validate()
    with pytest.raises(ValidationError, match=r"treatment name.*cannot be used.*at most 255 bytes"):
        experiment(treatments=[Treatment(name, {"delta": 1})]).validate()
    with pytest.raises(ValidationError, match=r"Experiment 'bad': step 2's name.*cannot be used"):
        experiment(score(), Named(name)).validate()
    with pytest.raises(ValidationError, match="artifact name"):
        Artifact(f"dir/{name}")
    assert ran() == []
    assert not Path("data").exists()


def test_unusual_but_valid_names_round_trip_through_load_run(store_root: str) -> None:
    name, condition, step = "Ünïcode exp-1.2 (β)", "lr 0.1 \u2013 fast", "step ünï-2.0"
    exp = Experiment(
        seven(),
        Pipeline([Named(step)]),
        plugins=[ArtifactPlugin(root_dir=store_root), SerialExecution(progress=False)],
        name=name,
        replicates=2,
        treatments=[Treatment(condition, {"delta": 1})],
    )
    live = exp.run()
    assert not any(live.replicate_errors.values()), live.errors
    stored = load_run(f"{store_root}/{name}")
    assert stored.provenance["finished"] is True
    assert stored.metrics.baseline.metrics["loss"] == [7.0, 7.0]
    assert stored.metrics.treatments[condition].metrics["loss"] == [8.0, 8.0]
    store = Store(store_root)
    for replicate in range(2):
        for cond in ("baseline", condition):
            folder = f"{name}/v0/replicate_{replicate}/{cond}/{step}"
            assert store.read_bytes(f"{folder}/résumé v2.txt") == f"r{replicate}".encode()
            assert store.read_bytes(f"{folder}/sub dir/日本 1.bin") == b"\x00\x01"
    # the same store refuses, up front, a name it could write but not reopen by the same name
    with pytest.raises(ValidationError, match=r"'\?'"):
        Experiment(seven(), Pipeline([Named(step)]), plugins=[ArtifactPlugin(root_dir=store_root)], name="what?").run()


# ------------------------------------------------------------------ 5. data roots and artifact sizes


def test_a_data_root_that_is_a_file_is_named_before_any_replicate(tmp_path: Path) -> None:
    root = tmp_path / "data-file"
    root.write_text("not a folder")
    plugins = [ArtifactPlugin(root_dir=str(root)), SerialExecution(progress=False)]
    with pytest.raises(ValidationError, match=rf"data root {root} is a file.*ArtifactPlugin\(root_dir"):
        experiment(plugins=plugins).run()
    inside = root / "below"
    with pytest.raises(ValidationError, match=rf"data root {inside} is inside {root}, which is a file"):
        experiment(plugins=[ArtifactPlugin(root_dir=str(inside))]).run()
    assert ran() == []


def test_a_read_only_data_root_is_named_before_any_replicate(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through permission bits; /sys refuses new folders even to root
        root = Path("/sys")
        if not root.is_dir():
            pytest.skip("no read-only folder available to root")
        match = r"data root /sys.*(PermissionError|read-only)"
    else:
        root = tmp_path / "read-only"
        root.mkdir()
        root.chmod(0o555)
        match = rf"data root {root} is a read-only folder"
    with pytest.raises(ValidationError, match=match):
        experiment(plugins=[ArtifactPlugin(root_dir=str(root)), SerialExecution(progress=False)]).run()
    assert ran() == []


@pipeline_step()
def big_on_replicate_one(data: int, ctx: Any) -> tuple[int, dict[str, float]]:
    size = 100 if ctx["replicate"] == 1 else 5
    ctx.artifacts.add("blob.bin", b"x" * size)
    return data, {"loss": 1.0}


def test_an_artifact_over_the_size_limit_fails_its_replicate_naming_it() -> None:
    plugins = [ArtifactPlugin(max_artifact_bytes=10), SerialExecution(progress=False)]
    result = experiment(big_on_replicate_one(), plugins=plugins, replicates=3).run()
    errors = result.replicate_errors["baseline"]
    assert sorted(errors) == [1]
    message = errors[1].message
    assert errors[1].stage == "big_on_replicate_one"
    for part in ("'blob.bin'", "step 'big_on_replicate_one'", "100 bytes", "max_artifact_bytes=10", "replicate 1"):
        assert part in message, message
    assert result.metrics.baseline.metrics["loss"] == [1.0, 1.0]
    with pytest.raises(ValidationError, match="max_artifact_bytes"):
        ArtifactPlugin(max_artifact_bytes=-1)


# ------------------------------------------------------------------ 6. clean starts


def test_an_unpicklable_step_on_the_process_pool_leaves_no_version() -> None:
    captured = {"lock": __import__("threading").Lock()}

    @pipeline_step()
    def local_step(data: int, ctx: Any, holder: Any = None) -> int:
        return data

    exp = experiment(local_step(holder=captured), plugins=[ParallelExecution(executor_type="process", max_workers=2)])
    with pytest.raises(CrystallizeError) as info:
        exp.run()
    assert isinstance(info.value, SerializationError), info.value
    assert versions() == []
    with pytest.raises(RunNotFoundError):
        load_run("data/bad")
    # the next run starts at v0
    experiment().run()
    assert versions() == [0]


class _BrokenExecutor(Executor):
    name = "broken"

    def start(self, spec: Any) -> Any:
        raise ExecutionError("this executor cannot start (test)")

    def map(self, tasks: Any, conditions: Any) -> Any:
        raise AssertionError("never")


class BrokenExecution(ExecutionPlugin):
    def create_executor(self) -> Executor:
        return _BrokenExecutor()


def test_a_failed_start_removes_its_claimed_version_but_never_a_resumed_one() -> None:
    experiment(replicates=2).run()  # v0, finished
    with pytest.raises(ExecutionError, match="cannot start"):
        experiment(replicates=2, plugins=[BrokenExecution()]).run()
    assert versions() == [0]  # the v1 it claimed is gone
    with pytest.raises(ExecutionError, match="cannot start"):
        experiment(replicates=2, plugins=[BrokenExecution()]).run(strategy="resume")
    assert versions() == [0]
    assert load_run("data/bad/v0").metrics.baseline.metrics["loss"] == [7.0, 7.0]  # the resumed one is intact
    # unversioned: a failed rerun into v0 keeps the folder (its artifacts) but leaves no plan claiming a run
    unversioned = [ArtifactPlugin(versioned=False), BrokenExecution()]
    with pytest.raises(ExecutionError):
        experiment(name="flat", plugins=unversioned).run()
    assert versions("flat") == []


def test_ray_without_the_gpus_asked_for_leaves_no_version(ray_session: Any) -> None:
    from crystallize_ray import RayExecution

    with pytest.raises(ExecutionError, match=r"needs .*GPU"):
        experiment(plugins=[RayExecution(num_gpus=1, progress=False)]).run()
    assert ran() == []
    assert versions() == []


UNREACHABLE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_bad_input import experiment, versions
    from crystallize_ray import RayExecution
    try:
        experiment(plugins=[RayExecution(address="127.0.0.1:1", progress=False)]).run()
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc, flush=True)
    import ray
    print("RAY", ray.is_initialized(), flush=True)
    print("VERSIONS", versions(), flush=True)
    """
)


def test_an_unreachable_ray_address_leaves_no_version(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    script = tmp_path / "unreachable.py"
    script.write_text(UNREACHABLE_SCRIPT.format(tests=str(TESTS)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    lines = done.stdout.splitlines()
    assert any(line.startswith("ERROR ExecutionError") and "127.0.0.1:1" in line for line in lines), done
    assert "RAY False" in lines, done
    assert "VERSIONS []" in lines, done


DRIVER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from test_bad_input import slow_logged
    from crystallize import Experiment, ParallelExecution, Pipeline
    from test_bad_input import seven

    print("DRIVER", os.getpid(), flush=True)
    Experiment(
        seven(),
        Pipeline([slow_logged()]),
        plugins=[ParallelExecution(executor_type="process", max_workers=2, batch_size=1, progress=False)],
        name="orphans",
        replicates=60,
    ).run()
    print("FINISHED", flush=True)
    """
)


@pipeline_step()
def slow_logged(data: int, ctx: Any) -> int:
    with open("replicates.log", "a") as log:
        log.write(f"start {os.getpid()} {ctx['replicate']}\n")
    time.sleep(0.4)
    with open("replicates.log", "a") as log:
        log.write(f"end {os.getpid()} {ctx['replicate']}\n")
    return data


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
def test_process_pool_workers_exit_when_their_driver_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_SCRIPT.format(tests=str(TESTS)))
    log = tmp_path / "replicates.log"
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or log.read_text().count("end ") < 4):
            time.sleep(0.1)
        assert log.exists() and log.read_text().count("end ") >= 4, "the run never got going"
        worker_pids = {int(line.split()[1]) for line in log.read_text().splitlines()}
        workers = [psutil.Process(pid) for pid in worker_pids]
        assert all(_alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, by its own pid
        proc.wait(timeout=10)
        at_kill = log.read_text().splitlines()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "pool workers outlived their killed driver"
        time.sleep(1.0)
        after = log.read_text().splitlines()[len(at_kill) :]
        # at most the replicate each worker was in when the watchdog looked (one per worker), never more
        assert sum(line.startswith("start ") for line in after) <= len(workers), after
        assert sum(line.startswith("end ") for line in after) <= len(workers), after
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        for worker in workers:  # only the pids this test saw working for its own driver
            if _alive(worker):
                worker.kill()
        if proc.stdout is not None:
            proc.stdout.close()
