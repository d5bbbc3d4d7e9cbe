"""Upstream-style ``crystallize.experiments.experiment_graph`` path (re-export)."""

from crystallize.graph import ExperimentGraph, find_experiments_root

__all__ = ["ExperimentGraph", "find_experiments_root"]
