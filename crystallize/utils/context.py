"""Compatibility path; the real code is in `crystallize.context`."""

from crystallize.context import ArtifactLog, ContextMutationError, FrozenContext, MetricsCollector

__all__ = ["FrozenContext", "ContextMutationError", "MetricsCollector", "ArtifactLog"]
