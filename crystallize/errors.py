"""One exception tree for the whole package, so users can catch ``CrystallizeError``.

Where an error used to be a builtin (``ValueError``, ``TypeError``, ``FileNotFoundError``,
``RuntimeError``), its class here derives from that builtin too, so ``except ValueError``
written against older versions still catches it.
"""

from __future__ import annotations

from typing import Any


class CrystallizeError(Exception):
    """Root of every error raised by Crystallize itself."""


class ValidationError(CrystallizeError, ValueError):
    """The experiment, or a value given to Crystallize, is not fit to use; the message says what to fix."""


class ParameterError(ValidationError, TypeError):
    """A function or class got a parameter it does not take, lacks one it needs, or got one of the wrong type."""


class ContextMutationError(CrystallizeError):
    """A context key was rebound; contexts are add-only so replicates stay comparable."""


class MissingMetricError(CrystallizeError):
    """A hypothesis asked for a metric that no replicate recorded."""

    def __init__(self, metric: str, condition: str | None = None) -> None:
        where = f" in condition '{condition}'" if condition else ""
        super().__init__(
            f"Metric '{metric}' was not recorded{where}; "
            "record it with ctx.metrics.add(name, value) or return (data, {name: value}) from a step."
        )
        self.metric = metric
        self.condition = condition


def _where(step_name: str, condition: str | None, replicate: int | None, experiment: str | None) -> str:
    """``step 's', condition 'c', replicate 3, experiment 'e'``: where a step failed, as far as known."""
    where = [f"step '{step_name}'"]
    if condition is not None:
        where.append(f"condition '{condition}'")
    if replicate is not None:
        where.append(f"replicate {replicate}")
    if experiment:
        where.append(f"experiment '{experiment}'")
    return ", ".join(where)


class PipelineExecutionError(CrystallizeError):
    """A step raised; carries where it happened so the user need not guess."""

    def __init__(
        self,
        step_name: str,
        original_exception: BaseException,
        *,
        condition: str | None = None,
        replicate: int | None = None,
        experiment: str | None = None,
    ) -> None:
        where = _where(step_name, condition, replicate, experiment)
        super().__init__(f"{where} failed: {type(original_exception).__name__}: {original_exception}")
        self.step_name = step_name
        self.original_exception = original_exception
        self.condition = condition
        self.replicate = replicate
        self.experiment = experiment

    def _fields(self) -> tuple[Any, ...]:
        return (self.step_name, self.original_exception, self.condition, self.replicate, self.experiment)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields (the default would call __init__ with the message alone).
        return (_rebuild_pipeline_error, self._fields())


def _rebuild_pipeline_error(
    step_name: str,
    original: BaseException,
    condition: str | None,
    replicate: int | None,
    experiment: str | None,
) -> PipelineExecutionError:
    return PipelineExecutionError(step_name, original, condition=condition, replicate=replicate, experiment=experiment)


class SerializationError(CrystallizeError):
    """Part of the run spec cannot be pickled for another process or machine."""


class CacheError(CrystallizeError):
    """A step result could not be hashed or stored in the step cache."""


class CorruptRecordError(CrystallizeError, ValueError):
    """Stored bytes (a run's outcome record, a cache entry) are truncated, altered, or not authentic."""


class CorruptEntry(CacheError, CorruptRecordError):
    """The bytes are not a valid, intact (and, with a key, authentic) cache entry; the cache recomputes it."""


CorruptEntryError = CorruptEntry


class ExecutionError(CrystallizeError):
    """An executor failed as a whole (not a single replicate)."""


class RunNotFoundError(CrystallizeError, FileNotFoundError):
    """No stored run (or no runs of an experiment) at the location given."""


class ArtifactNotFoundError(CrystallizeError, FileNotFoundError):
    """A producer's run holds no such artifact for the replicate and condition asked for."""


class ArtifactNotBoundError(CrystallizeError, RuntimeError):
    """``Artifact.write(value)`` outside a step: only the copy a step receives knows the replicate's context."""


class OptimizerError(CrystallizeError, RuntimeError):
    """An optimizer was used out of order: ``tell()`` before ``ask()``, a best treatment before any score."""


class TargetError(CrystallizeError):
    """What the command line was asked to run or read cannot be loaded, or the options do not fit it (exit code 2)."""


class UntrustedEntry(CorruptEntry):
    """A cache entry is intact but not signed with this run's cache key (or not signed at all); it is never loaded."""


class StorePathError(ValidationError):
    """A store path resolves outside the store root (through ``..`` or a symbolic link); nothing is read or written."""


class CacheKeyError(CacheError):
    """The cache signing key cannot be read or made, or its file is readable by others; the message says what to fix."""


class DatasourceNotFoundError(CrystallizeError, KeyError):
    """No datasource is registered under the name asked for (a ``KeyError``, as a missing mapping key is)."""

    def __str__(self) -> str:
        # KeyError shows its argument's repr; this message is prose, shown as written.
        return str(self.args[0]) if self.args else ""


class ReplicateError(PipelineExecutionError):
    """A failed replicate as ``Result.errors`` shows it when the exception itself is not at hand.

    After ``load_run`` or a process/Ray worker only the record of the error exists: this class
    carries the original's type name (``exception_type``, and its classes as
    ``exception_types``), message and traceback (``traceback_str``), so nothing stored is ever
    unpickled. In the process that caught it, ``original_exception`` is the exception itself.
    """

    def __init__(
        self,
        step_name: str,
        exception_type: str,
        message: str,
        traceback: str = "",
        *,
        condition: str | None = None,
        replicate: int | None = None,
        experiment: str | None = None,
        exception_types: tuple[str, ...] = (),
        original_exception: BaseException | None = None,
    ) -> None:
        where = _where(step_name, condition, replicate, experiment)
        CrystallizeError.__init__(self, f"{where} failed: {exception_type}: {message}")
        self.step_name = step_name
        self.original_exception = original_exception  # type: ignore[assignment]
        self.condition = condition
        self.replicate = replicate
        self.experiment = experiment
        self.exception_type = exception_type
        self.exception_types = tuple(exception_types)
        self.message = message
        self.traceback_str = traceback

    def __reduce__(self) -> tuple[object, ...]:
        # Plain fields only: the original exception stays in the process that caught it.
        fields = (self.step_name, self.exception_type, self.message, self.traceback_str)
        where = (self.condition, self.replicate, self.experiment, self.exception_types)
        return (_rebuild_replicate_error, (*fields, *where))


def _rebuild_replicate_error(
    step_name: str,
    exception_type: str,
    message: str,
    traceback: str,
    condition: str | None,
    replicate: int | None,
    experiment: str | None,
    exception_types: tuple[str, ...],
) -> ReplicateError:
    return ReplicateError(
        step_name,
        exception_type,
        message,
        traceback,
        condition=condition,
        replicate=replicate,
        experiment=experiment,
        exception_types=exception_types,
    )


_STEP_FAILURE_CLASSES: dict[type[BaseException], type[PipelineExecutionError] | None] = {}


def step_failure(
    step_name: str,
    original: BaseException,
    *,
    condition: str | None = None,
    replicate: int | None = None,
    experiment: str | None = None,
) -> PipelineExecutionError:
    """A ``PipelineExecutionError`` that is also an instance of the original exception's class.

    Crystallize 0.27's ``apply()`` let a step's own exception through, so callers wrote
    ``except ValueError``; this error still names the step, condition and replicate and is
    caught there too. Where the two classes cannot be combined (their layouts conflict, or
    the original's instances cannot be made without its own arguments) it is a plain
    ``PipelineExecutionError``. The original's attributes are copied onto it (``except MyError as e: e.code``).
    """
    plain = PipelineExecutionError(step_name, original, condition=condition, replicate=replicate, experiment=experiment)
    combined = _combined_class(type(original))
    if combined is None:
        return plain
    try:
        # Not through the original class's __init__ (it may want other arguments): its attributes are copied.
        error = combined.__new__(combined, *plain.args)
        error.__dict__.update(vars(original))
        error.__dict__.update(vars(plain))
        error.args = plain.args
    except Exception:  # noqa: BLE001 - a class whose instances cannot be made this way
        _STEP_FAILURE_CLASSES[type(original)] = None
        return plain
    return error


def _combined_class(kind: type[BaseException]) -> type[PipelineExecutionError] | None:
    if issubclass(kind, (PipelineExecutionError, StopIteration, StopAsyncIteration)) or not issubclass(kind, Exception):
        return None  # a StopIteration raised in the replicate's generator would turn into a RuntimeError
    if kind not in _STEP_FAILURE_CLASSES:
        try:
            _STEP_FAILURE_CLASSES[kind] = type(
                f"PipelineExecutionError[{kind.__name__}]",
                (PipelineExecutionError, kind),
                {"__module__": __name__, "__str__": BaseException.__str__, "__reduce__": _reduce_step_failure},
            )
        except TypeError:  # e.g. an instance layout conflict, or a class that refuses subclasses
            _STEP_FAILURE_CLASSES[kind] = None
    return _STEP_FAILURE_CLASSES[kind]


def _reduce_step_failure(self: PipelineExecutionError) -> tuple[Any, ...]:
    # The combined class is made at run time, so it is not importable: rebuild it the same way.
    return (_rebuild_step_failure, self._fields())


def _rebuild_step_failure(
    step_name: str,
    original: BaseException,
    condition: str | None,
    replicate: int | None,
    experiment: str | None,
) -> PipelineExecutionError:
    return step_failure(step_name, original, condition=condition, replicate=replicate, experiment=experiment)
