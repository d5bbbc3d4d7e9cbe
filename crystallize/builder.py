"""The fluent builder of seed 001: ``Experiment.builder("basic").datasource(...)...build()``.

The builder is given its target class and never imports :mod:`crystallize.experiment`,
which uses it (``Experiment.builder``) — so the two do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .datasource import DataSource
from .errors import CrystallizeError, ValidationError
from .hypothesis import Hypothesis
from .pipeline import Pipeline
from .plugins.base import BasePlugin
from .steps import PipelineStep
from .treatment import Treatment

if TYPE_CHECKING:
    from .experiment import Experiment


class ExperimentBuilder:
    """Collects the parts of an experiment; ``build()`` makes and validates it.

    ``experiment_class`` is the class ``build()`` makes: ``Experiment.builder(name)``
    passes its own class (a subclass gets builders of itself). ``ExperimentBuilder(name)``
    without one makes ``default_experiment_class``, which the ``crystallize`` package binds
    to ``Experiment`` when it is imported — the one place that imports both modules, so
    the default costs no import cycle. It is read at ``build()``, not at import time.
    """

    default_experiment_class: ClassVar[type[Experiment] | None] = None

    def __init__(self, name: str | None = None, *, experiment_class: type[Experiment] | None = None) -> None:
        self._experiment_class = experiment_class
        self._name = name
        self._datasource: DataSource | None = None
        self._steps: list[PipelineStep] = []
        self._plugins: list[BasePlugin] = []
        self._treatments: list[Treatment] = []
        self._hypotheses: list[Hypothesis] = []
        self._replicates = 1
        self._description: str | None = None
        self._initial_ctx: dict[str, Any] = {}
        self._outputs: list[Any] = []
        self._strategy: str | None = None

    def name(self, name: str) -> ExperimentBuilder:
        self._name = name
        return self

    def datasource(self, datasource: DataSource) -> ExperimentBuilder:
        self._datasource = datasource
        return self

    def pipeline(self, pipeline: Pipeline | Sequence[PipelineStep]) -> ExperimentBuilder:
        self._steps = list(pipeline.steps if isinstance(pipeline, Pipeline) else pipeline)
        return self

    def add_step(self, step: PipelineStep) -> ExperimentBuilder:
        self._steps.append(step)
        return self

    def plugins(self, plugins: Sequence[BasePlugin]) -> ExperimentBuilder:
        self._plugins = list(plugins)
        return self

    def treatments(self, treatments: Sequence[Treatment]) -> ExperimentBuilder:
        self._treatments = list(treatments)
        return self

    def hypotheses(self, hypotheses: Sequence[Hypothesis]) -> ExperimentBuilder:
        self._hypotheses = list(hypotheses)
        return self

    def replicates(self, replicates: int) -> ExperimentBuilder:
        self._replicates = replicates
        return self

    def description(self, description: str) -> ExperimentBuilder:
        self._description = description
        return self

    def initial_ctx(self, initial_ctx: Mapping[str, Any]) -> ExperimentBuilder:
        self._initial_ctx = dict(initial_ctx)
        return self

    def outputs(self, outputs: Sequence[Any]) -> ExperimentBuilder:
        self._outputs = list(outputs)
        return self

    def strategy(self, strategy: str) -> ExperimentBuilder:
        """Default for ``run()``: ``"rerun"`` (a new version) or ``"resume"`` (finish the latest one)."""
        self._strategy = strategy
        return self

    def build(self) -> Experiment:
        if self._datasource is None:
            raise ValidationError("datasource must be provided: call .datasource(my_source()) on the builder")
        experiment_class = self._experiment_class or ExperimentBuilder.default_experiment_class
        if experiment_class is None:  # only while the crystallize package itself is being imported
            raise CrystallizeError(
                "ExperimentBuilder has no experiment class: pass experiment_class=Experiment "
                "(or use Experiment.builder(name))"
            )
        experiment = experiment_class(
            datasource=self._datasource,
            pipeline=Pipeline(self._steps),
            plugins=self._plugins,
            name=self._name,
            description=self._description,
            initial_ctx=self._initial_ctx,
            outputs=self._outputs,
            treatments=self._treatments,
            hypotheses=self._hypotheses,
            replicates=self._replicates,
        )
        experiment.strategy = self._strategy
        experiment.validate()
        return experiment
