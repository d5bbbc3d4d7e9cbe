"""Upstream-style ``crystallize.experiments.experiment_graph`` path (re-export)."""

from crystallize.graph import ExperimentGraph

__all__ = ["ExperimentGraph"]
