"""Compatibility path; the real code is in `crystallize.results`."""

from crystallize.results import ExperimentMetrics, HypothesisResult, TreatmentMetrics

__all__ = ["ExperimentMetrics", "HypothesisResult", "TreatmentMetrics"]
