"""Compatibility path; the real code is in `crystallize.builder`."""

from crystallize.builder import ExperimentBuilder

__all__ = ["ExperimentBuilder"]
