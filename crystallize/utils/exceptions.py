"""Compatibility path; the real code is in `crystallize.errors`."""

from crystallize.errors import (
    ContextMutationError,
    CrystallizeError,
    MissingMetricError,
    PipelineExecutionError,
    ValidationError,
)

__all__ = [
    "CrystallizeError",
    "ContextMutationError",
    "MissingMetricError",
    "PipelineExecutionError",
    "ValidationError",
]
