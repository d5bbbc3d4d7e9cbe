"""Shared fixtures: every test runs in its own working folder; one suite runs on every executor."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from crystallize import AsyncExecution, ParallelExecution, SerialExecution

# name -> factory of the execution plugin. Executors added later (Ray) register here,
# so the behavioural suite runs against them too.
EXECUTORS = {
    "serial": lambda: SerialExecution(progress=False),
    "thread1": lambda: ParallelExecution(max_workers=1, executor_type="thread", progress=False),
    "process": lambda: ParallelExecution(max_workers=2, executor_type="process", progress=False),
    "async": lambda: AsyncExecution(progress=False),
    "ray": lambda: _ray_execution(),
}
NEEDS_RAY = {"ray"}


def _ray_execution():
    from crystallize_ray import RayExecution

    return RayExecution(progress=False)


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray for the whole test session (2 CPUs, loopback, own temp dir).

    Workers get ``tests/`` on their path, so steps defined in test modules unpickle there.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    temp_dir = tempfile.mkdtemp(prefix="cray-t-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/`` and ``.cache/`` land in a fresh folder per test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRYSTALLIZE_CACHE_DIR", raising=False)
    return tmp_path


@pytest.fixture(params=sorted(EXECUTORS))
def execution(request: pytest.FixtureRequest):
    """A fresh execution plugin of each kind; tests using it run once per executor."""
    if request.param in NEEDS_RAY:
        request.getfixturevalue("ray_session")
    return EXECUTORS[request.param]()
