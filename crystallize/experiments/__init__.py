"""Upstream-style ``crystallize.experiments`` paths (re-exports)."""

from crystallize.experiment import Experiment
from crystallize.graph import ExperimentGraph
from crystallize.hypothesis import Hypothesis
from crystallize.optimizers import BaseOptimizer, GridSearchOptimizer, Objective, RandomSearchOptimizer
from crystallize.results import ExperimentMetrics, HypothesisResult, Result, TreatmentMetrics
from crystallize.treatment import Treatment

__all__ = [
    "BaseOptimizer",
    "Experiment",
    "ExperimentGraph",
    "ExperimentMetrics",
    "GridSearchOptimizer",
    "Hypothesis",
    "HypothesisResult",
    "Objective",
    "RandomSearchOptimizer",
    "Result",
    "Treatment",
    "TreatmentMetrics",
]
