"""Plugins: observer hooks (seed, logging, artifacts) and execution plugins."""

from .artifacts import ArtifactPlugin, load_all_metrics, load_metrics, load_metrics_table
from .base import BasePlugin
from .execution import AsyncExecution, ExecutionPlugin, ParallelExecution, SerialExecution
from .logging_plugin import LoggingPlugin
from .seed import SeedPlugin

__all__ = [
    "ArtifactPlugin",
    "AsyncExecution",
    "BasePlugin",
    "ExecutionPlugin",
    "LoggingPlugin",
    "ParallelExecution",
    "SeedPlugin",
    "SerialExecution",
    "load_all_metrics",
    "load_metrics",
    "load_metrics_table",
]
