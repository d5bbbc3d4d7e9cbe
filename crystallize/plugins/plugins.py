"""Compatibility path; the real code is in `crystallize.plugins`."""

from crystallize.plugins.artifacts import ArtifactPlugin
from crystallize.plugins.base import BasePlugin
from crystallize.plugins.logging_plugin import LoggingPlugin
from crystallize.plugins.seed import SeedPlugin, default_seed_function

__all__ = ["ArtifactPlugin", "BasePlugin", "LoggingPlugin", "SeedPlugin", "default_seed_function"]
