"""Compatibility path; the real code is in `crystallize.results`."""

from crystallize.results import Result

__all__ = ["Result"]
