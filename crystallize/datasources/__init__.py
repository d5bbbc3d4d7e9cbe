"""Upstream-style ``crystallize.datasources`` paths (re-exports)."""

from crystallize.artifact import Artifact
from crystallize.context import ArtifactLog
from crystallize.datasource import DataSource, ExperimentInput

MultiArtifactDataSource = ExperimentInput  # the 0.27 name

__all__ = ["Artifact", "ArtifactLog", "DataSource", "ExperimentInput", "MultiArtifactDataSource"]
