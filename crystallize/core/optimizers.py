"""Compatibility path; the real code is in `crystallize.optimizers`."""

from crystallize.optimizers import BaseOptimizer, GridSearchOptimizer, Objective, RandomSearchOptimizer

__all__ = ["BaseOptimizer", "Objective", "GridSearchOptimizer", "RandomSearchOptimizer"]
