"""Upstream-style ``crystallize.datasources.artifacts`` path (re-export)."""

from crystallize.artifact import Artifact, ArtifactDataSource
from crystallize.context import ArtifactLog, ArtifactRecord

__all__ = ["Artifact", "ArtifactDataSource", "ArtifactLog", "ArtifactRecord"]
