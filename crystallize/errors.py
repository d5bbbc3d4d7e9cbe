"""One exception tree for the whole package, so users can catch ``CrystallizeError``.

Where an error used to be a builtin (``ValueError``, ``TypeError``, ``FileNotFoundError``,
``RuntimeError``), its class here derives from that builtin too, so ``except ValueError``
written against older versions still catches it.
"""

from __future__ import annotations


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
        where = [f"step '{step_name}'"]
        if condition is not None:
            where.append(f"condition '{condition}'")
        if replicate is not None:
            where.append(f"replicate {replicate}")
        if experiment:
            where.append(f"experiment '{experiment}'")
        super().__init__(f"{', '.join(where)} failed: {type(original_exception).__name__}: {original_exception}")
        self.step_name = step_name
        self.original_exception = original_exception
        self.condition = condition
        self.replicate = replicate
        self.experiment = experiment


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
