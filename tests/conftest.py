"""Shared fixtures: every test runs in its own working folder; one suite runs on every executor."""

from __future__ import annotations

import sys
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
}


@pytest.fixture(autouse=True)
def _private_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/`` and ``.cache/`` land in a fresh folder per test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRYSTALLIZE_CACHE_DIR", raising=False)
    return tmp_path


@pytest.fixture(params=sorted(EXECUTORS))
def execution(request: pytest.FixtureRequest):
    """A fresh execution plugin of each kind; tests using it run once per executor."""
    return EXECUTORS[request.param]()
