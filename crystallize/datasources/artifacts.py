"""Upstream-style ``crystallize.datasources.artifacts`` path (re-export)."""

from crystallize.artifact import Artifact

__all__ = ["Artifact"]
