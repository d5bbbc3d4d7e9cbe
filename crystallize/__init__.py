"""Crystallize: reproducible experiments with replicates, treatments and hypotheses.

Everything a user imports lives here; module paths of earlier releases
(``crystallize.core.*``, ``crystallize.experiments.*`` ...) re-export these names.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .artifact import Artifact
from .builder import ExperimentBuilder
from .context import ArtifactLog, FrozenContext, MetricsCollector
from .datasource import DataSource, ExperimentInput
from .datasource_registry import get_datasource, list_datasources, register_datasource
from .decorators import data_source, hypothesis, pipeline, pipeline_step, resource_factory, treatment, verifier
from .errors import (
    ContextMutationError,
    CrystallizeError,
    MissingMetricError,
    PipelineExecutionError,
    ReplicateError,
    SerializationError,
    ValidationError,
)
from .experiment import Experiment
from .graph import ExperimentGraph
from .hypothesis import Hypothesis
from .injection import inject_from_ctx
from .optimizers import BaseOptimizer, GridSearchOptimizer, Objective, RandomSearchOptimizer
from .pipeline import Pipeline
from .plugins.artifacts import ArtifactPlugin
from .plugins.base import BasePlugin
from .plugins.execution import AsyncExecution, ExecutionPlugin, ParallelExecution, SerialExecution
from .plugins.logging_plugin import LoggingPlugin
from .plugins.seed import SeedPlugin
from .quick import quick_experiment
from .results import ExperimentMetrics, HypothesisResult, Result, TreatmentMetrics
from .runs import load_run
from .stats.verifiers import (
    bootstrap_ci,
    mann_whitney_test,
    paired_t_test,
    permutation_test,
    welch_t_test,
    wilcoxon_test,
)
from .steps import PipelineStep, exit_step
from .treatment import Treatment

logging.getLogger("crystallize").addHandler(logging.NullHandler())

# The builder (and the YAML loader, through it) is given the class it builds; this is the
# one module importing both, so it binds the default for ``ExperimentBuilder(name)``.
ExperimentBuilder.default_experiment_class = Experiment


def standalone_context(initial: dict | None = None, *, logger: logging.Logger | None = None) -> FrozenContext:
    """A context for calling steps by hand (tests, notebooks)."""
    return FrozenContext(initial or {}, logger=logger)


__all__ = [
    "Artifact",
    "ArtifactLog",
    "ArtifactPlugin",
    "AsyncExecution",
    "BaseOptimizer",
    "BasePlugin",
    "ContextMutationError",
    "CrystallizeError",
    "DataSource",
    "ExecutionPlugin",
    "Experiment",
    "ExperimentBuilder",
    "ExperimentGraph",
    "ExperimentInput",
    "ExperimentMetrics",
    "FrozenContext",
    "GridSearchOptimizer",
    "Hypothesis",
    "HypothesisResult",
    "LoggingPlugin",
    "MetricsCollector",
    "MissingMetricError",
    "Objective",
    "ParallelExecution",
    "Pipeline",
    "PipelineExecutionError",
    "PipelineStep",
    "RandomSearchOptimizer",
    "ReplicateError",
    "Result",
    "SeedPlugin",
    "SerialExecution",
    "SerializationError",
    "Treatment",
    "TreatmentMetrics",
    "ValidationError",
    "__version__",
    "bootstrap_ci",
    "data_source",
    "exit_step",
    "get_datasource",
    "hypothesis",
    "inject_from_ctx",
    "list_datasources",
    "load_run",
    "mann_whitney_test",
    "paired_t_test",
    "permutation_test",
    "pipeline",
    "pipeline_step",
    "quick_experiment",
    "register_datasource",
    "resource_factory",
    "standalone_context",
    "treatment",
    "verifier",
    "welch_t_test",
    "wilcoxon_test",
]
