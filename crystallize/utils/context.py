"""Compatibility path; the real code is in `crystallize.context`."""

from crystallize.context import (FrozenContext, ContextMutationError, MetricsCollector, ArtifactLog)

__all__ = ["FrozenContext", "ContextMutationError", "MetricsCollector", "ArtifactLog"]
