"""Results do not depend on the executor: the conformance suite on every registered executor.

The suite itself is ``crystallize.testing.ExecutorConformance`` (shipped, so other executors
run it too); here it runs once per conformance configuration of the registry (serial,
thread1, process, async, ray, and any an installed package registers), through the
``execution`` fixture of ``conftest.py``. What is specific to one executor stays here.
"""

from __future__ import annotations

import logging

import pytest

from crystallize import ParallelExecution
from crystallize.plugins.execution import ExecutionPlugin
from crystallize.testing import ExecutorConformance
from crystallize.testing.executor_suite import make, warning_texts
from crystallize.testing.steps import add_delta, noisy_total


class TestExecutorConformance(ExecutorConformance):
    @pytest.fixture
    def execution(self, execution: ExecutionPlugin) -> ExecutionPlugin:
        """The conftest fixture: one plugin per registered conformance configuration."""
        return execution


def test_thread_pool_warns_about_global_generators(caplog: pytest.LogCaptureFixture) -> None:
    def run(workers, name):
        exp = make(
            ParallelExecution(max_workers=workers, executor_type="thread", progress=False),
            [add_delta(), noisy_total()],
            name=name,
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="crystallize"):
            result = exp.run()
        return result, warning_texts(caplog.records, "ctx.rng"), [r.getMessage() for r in caplog.records]

    result, warned, messages = run(2, "two_threads")
    assert len(warned) == 1, warned
    assert "process" in warned[0].lower() and "ray" in warned[0].lower()
    assert messages.index(warned[0]) < next(i for i, m in enumerate(messages) if "finished" in m)
    assert [w for w in result.provenance["warnings"] if "ctx.rng" in w]

    result, warned, _ = run(1, "one_thread")
    assert warned == []
    assert not [w for w in result.provenance.get("warnings", []) if "ctx.rng" in w]


def test_provenance_names_each_local_executor_as_the_registry_does() -> None:
    """``--executor asyncio`` runs an executor recorded as ``asyncio``, not under another name."""
    from crystallize.execution import registry

    for name in ("serial", "thread", "process", "asyncio"):
        executor = registry.get(name).create().create_executor()
        try:
            assert executor.describe()["executor"] == name
        finally:
            executor.stop()
