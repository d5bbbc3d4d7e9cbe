"""Compatibility path; the real code is in `crystallize.experiment`."""

from crystallize.experiment import Experiment

__all__ = ["Experiment"]
