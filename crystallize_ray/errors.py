"""Ray's exceptions, translated in one place into Crystallize's error records and errors."""

from __future__ import annotations

from collections.abc import Sequence

from crystallize.engine.plan import ErrorRecord, ReplicateOutcome

_HINTS = {
    "WorkerCrashedError": "the worker process died (out of memory, a segfault in native code, or os._exit)",
    "NodeDiedError": "the node running it left the cluster",
    "OutOfMemoryError": "Ray's memory monitor killed the worker; ask for more memory per replicate (memory=...)",
    "TaskCancelledError": "the task was cancelled",
    "ObjectLostError": "its result was lost with the node that held it",
    "RuntimeEnvSetupError": "the runtime_env could not be set up on the worker",
}


def describe(exc: BaseException) -> str:
    name = type(exc).__name__
    for key, hint in _HINTS.items():
        if key in name or key in str(exc)[:2000]:
            return hint
    return "Ray could not run the task"


def environment_broken(exc: BaseException) -> bool:
    """Failures that no retry or other replicate can escape: the workers' environment is wrong."""
    text = str(exc)[:4000]
    return "RuntimeEnvSetupError" in type(exc).__name__ or "failed to import on the worker" in text


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
