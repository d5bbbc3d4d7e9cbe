"""Ray's exceptions are translated by class, in one table (crystallize_ray/errors.py)."""

from __future__ import annotations

import pytest

rx = pytest.importorskip("ray.exceptions")

from crystallize.errors import CrystallizeError, ExecutionError  # noqa: E402
from crystallize_ray.errors import classify, failed_batch, fatal_error  # noqa: E402


@pytest.mark.parametrize(
    "exc, words",
    [
        (rx.WorkerCrashedError(), "worker process died"),
        (rx.NodeDiedError("node 1 is gone"), "left the cluster"),
        (rx.OutOfMemoryError("killed"), "memory=..."),
        (rx.TaskCancelledError(), "cancelled"),
        (rx.OwnerDiedError("ab" * 14, "addr", "call site"), "lost with the node"),  # a subclass of ObjectLostError
    ],
)
def test_replicate_level_failures_become_error_records(exc: BaseException, words: str) -> None:
    assert not classify(exc).fatal
    assert fatal_error(exc) is None
    [outcome] = failed_batch([("baseline", 3)], exc, attempts=4)
    assert outcome.error is not None
    assert words in outcome.error.message and "after 4 attempt(s)" in outcome.error.message
    assert outcome.error.exception_type == type(exc).__name__
    assert (outcome.condition, outcome.replicate) == ("baseline", 3)


def test_a_broken_runtime_env_stops_the_run_with_an_install_hint() -> None:
    error = fatal_error(rx.RuntimeEnvSetupError("pip failed"))
    assert isinstance(error, ExecutionError) and isinstance(error, CrystallizeError)
    assert "runtime_env" in str(error) and "py_modules" in str(error)


def test_an_import_failure_on_the_worker_is_fatal_though_ray_gives_it_no_class() -> None:
    exc = RuntimeError("The remote function failed to import on the worker. ModuleNotFoundError: no module 'mine'")
    error = fatal_error(exc)
    assert error is not None and "cannot load Crystallize or your code" in str(error)
    assert "ModuleNotFoundError" in str(error)


def test_an_unknown_exception_is_not_fatal() -> None:
    assert fatal_error(ValueError("boom")) is None
    assert classify(ValueError("boom")).hint == "Ray could not run the task"
