"""Ray's exceptions, translated in one place: one table keyed by the classes of ``ray.exceptions``.

Each entry says what happened in words a user can act on, and whether the run can go on:
``fatal`` failures (the workers' environment is wrong) stop the run with an
:class:`~crystallize.errors.ExecutionError`, since no retry or other replicate escapes them;
the others become error records of the replicates they hit, after Ray's own retries and
after a failing batch has been split so only the culprit fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from crystallize.engine.plan import ErrorRecord, ReplicateOutcome
from crystallize.errors import ExecutionError

_INSTALL_HINT = (
    "Install the package on every node, or ship it with RayExecution(runtime_env={'py_modules': [...]} "
    "or {'pip': [...]} or {'working_dir': '.'})."
)


@dataclass(frozen=True)
class RayFailure:
    """How a Ray exception is explained and handled."""

    hint: str
    fatal: bool = False


_UNKNOWN = RayFailure("Ray could not run the task")
_IMPORT_FAILURE = RayFailure("Ray workers cannot load Crystallize or your code", fatal=True)


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[type[BaseException], RayFailure], ...]:
    """Most specific classes first (``isinstance`` picks the first match)."""
    from ray import exceptions as rx

    return (
        (rx.RuntimeEnvSetupError, RayFailure("the runtime_env could not be set up on the worker", fatal=True)),
        (rx.OutOfMemoryError, RayFailure("Ray's memory monitor killed the worker; ask for more memory (memory=...)")),
        (rx.WorkerCrashedError, RayFailure("the worker process died (out of memory, a native crash, or os._exit)")),
        (rx.LocalRayletDiedError, RayFailure("the local Ray node manager died")),
        (rx.NodeDiedError, RayFailure("the node running it left the cluster")),
        (rx.TaskCancelledError, RayFailure("the task was cancelled")),
        (rx.ObjectLostError, RayFailure("its result was lost with the node that held it")),
        (rx.ObjectStoreFullError, RayFailure("the object store is full; lower max_in_flight or add memory")),
        (rx.OutOfDiskError, RayFailure("a node ran out of disk for spilled objects")),
        (rx.TaskUnschedulableError, RayFailure("no node can schedule the task (its resource request)")),
        (rx.RaySystemError, RayFailure("Ray itself failed")),
    )


def classify(exc: BaseException) -> RayFailure:
    """The table entry for ``exc``: by class, or the one failure Ray reports only in words."""
    for kind, failure in _table():
        if isinstance(exc, kind):
            return failure
    # A remote function that cannot be imported on the worker has no class of its own in
    # ray.exceptions: it arrives as a RayTaskError whose text says so.
    if "failed to import on the worker" in str(exc)[:4000]:
        return _IMPORT_FAILURE
    return _UNKNOWN


def describe(exc: BaseException) -> str:
    return classify(exc).hint


def fatal_error(exc: BaseException) -> ExecutionError | None:
    """The error that stops the run, when ``exc`` is one no retry can escape; else None."""
    failure = classify(exc)
    if not failure.fatal:
        return None
    last_line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    return ExecutionError(f"{failure.hint}: {last_line}. {_INSTALL_HINT}")


def failed_batch(tasks: Sequence[tuple[str, int]], exc: BaseException, attempts: int) -> list[ReplicateOutcome]:
    """An error outcome for every task of a batch that Ray could not run after its retries."""
    reason = describe(exc)
    message = f"{reason} (after {attempts} attempt(s)): {type(exc).__name__}: {str(exc)[:2000]}"
    return [
        ReplicateOutcome(
            condition=condition,
            replicate=replicate,
            seed=None,
            metrics={},
            error=ErrorRecord(
                stage="ray",
                exception_type=type(exc).__name__,
                message=message,
                traceback=str(exc),
                condition=condition,
                replicate=replicate,
                exception_types=tuple(f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__),
                attempts=attempts,
            ),
        )
        for condition, replicate in tasks
    ]
