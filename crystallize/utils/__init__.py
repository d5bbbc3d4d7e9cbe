"""Upstream-style ``crystallize.utils`` paths (re-exports)."""

from crystallize.context import FrozenContext
from crystallize.errors import ContextMutationError, MissingMetricError, PipelineExecutionError, ValidationError
from crystallize.injection import inject_from_ctx

__all__ = [
    "ContextMutationError",
    "FrozenContext",
    "MissingMetricError",
    "PipelineExecutionError",
    "ValidationError",
    "inject_from_ctx",
]
