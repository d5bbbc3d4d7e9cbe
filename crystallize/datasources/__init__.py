"""Upstream-style ``crystallize.datasources`` paths (re-exports)."""

from crystallize.datasource import DataSource, ExperimentInput

__all__ = ["DataSource", "ExperimentInput"]
