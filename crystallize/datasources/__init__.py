"""Upstream-style ``crystallize.datasources`` paths (re-exports)."""

from crystallize.artifact import Artifact
from crystallize.datasource import DataSource, ExperimentInput

__all__ = ["Artifact", "DataSource", "ExperimentInput"]
