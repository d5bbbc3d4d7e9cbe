"""Compatibility path; the real code is in `crystallize.datasource`."""

from crystallize.datasource import DataSource, ExperimentInput, FunctionSource

MultiArtifactDataSource = ExperimentInput  # the 0.27 name

__all__ = ["DataSource", "ExperimentInput", "FunctionSource", "MultiArtifactDataSource"]
