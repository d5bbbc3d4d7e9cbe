"""One exception tree for the whole package, so users can catch ``CrystallizeError``."""

from __future__ import annotations


class CrystallizeError(Exception):
    """Root of every error raised by Crystallize itself."""


class ValidationError(CrystallizeError):
    """The experiment is not fit to run; the message says what to fix."""


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


class ExecutionError(CrystallizeError):
    """An executor failed as a whole (not a single replicate)."""
