"""Compatibility path; the real code is in `crystallize.datasource`."""

from crystallize.datasource import DataSource, ExperimentInput, FunctionSource

__all__ = ["DataSource", "ExperimentInput", "FunctionSource"]
