"""Shared fixtures: every test runs in its own working folder; one suite runs on every executor."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from crystallize.execution import registry

# id -> (registry entry, factory of the execution plugin): the conformance configurations every
# registered executor declares (serial, thread1, process, async, ray, and any an installed package
# adds), so the behavioural suite runs against all of them.
CONFORMANCE = registry.conformance_configurations()
EXECUTORS = {config_id: make for config_id, (_, make) in CONFORMANCE.items()}
# A module an entry needs -> the session fixture that sets it up (one private Ray for the session).
SESSION_FIXTURES = {"ray": "ray_session"}


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray for the whole test session (2 CPUs, loopback, own temp dir).

    Workers get ``tests/`` on their path, so steps defined in test modules unpickle there.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    from crystallize_ray.connection import loopback_only
    from crystallize_ray.token_file import protect_auth_token

    temp_dir = tempfile.mkdtemp(prefix="cray-t-", dir="/tmp")
    protect_auth_token()  # as ensure_connected does before it starts a private Ray
    with loopback_only():
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
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/`` and ``.cache/`` land in a fresh folder per test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRYSTALLIZE_CACHE_DIR", raising=False)
    return tmp_path


@pytest.fixture(params=sorted(EXECUTORS))
def execution(request: pytest.FixtureRequest):
    """A fresh execution plugin of each kind; tests using it run once per executor (skipped when it cannot run)."""
    entry, make = CONFORMANCE[request.param]
    reason = entry.unavailable_reason()
    if reason is not None:
        pytest.skip(f"executor '{entry.name}' {reason}")
    for module in entry.needs:
        if module in SESSION_FIXTURES:
            request.getfixturevalue(SESSION_FIXTURES[module])
    return make()


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The root of a store of this test's own: a folder in ``tmp_path`` or a fresh S3 bucket/prefix.

    The S3 side needs the ``moto_endpoint`` fixture: a module using this one imports it from
    ``s3_server``.
    """
    from s3_server import make_store_root

    return make_store_root(request, tmp_path)


from collections.abc import Iterator  # noqa: E402  (appended with the fixtures below)


@pytest.fixture(scope="session")
def _session_config_home() -> Iterator[Path]:
    """Outside pytest's base temp folder, which some tests snapshot to prove they wrote nothing beside them."""
    folder = Path(tempfile.mkdtemp(prefix="crystallize-xdg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_config_home(_session_config_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user cache key file (``$XDG_CONFIG_HOME/crystallize/cache.key``) never lands in the real home."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(_session_config_home))
    return _session_config_home
