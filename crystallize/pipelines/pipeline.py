"""Compatibility path; the real code is in `crystallize.pipeline`."""

from crystallize.pipeline import Pipeline

__all__ = ["Pipeline"]
