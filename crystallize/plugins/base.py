"""The plugin interface: observer hooks around a run.

Order of hooks in ``run()``:

1. ``init_hook(experiment)`` once, when the experiment is built (driver);
2. ``before_run(experiment)`` (driver);
3. per replicate, wherever it runs (worker): ``before_replicate(spec, ctx)``, then per
   step ``before_step(spec, step)`` and ``after_step(spec, step, data, ctx)``;
4. ``after_run(experiment, result)`` (driver).

Worker-side hooks receive the frozen :class:`~crystallize.engine.plan.RunSpec` as their
first argument (``name``, ``id``, ``pipeline``, ``datasource``, ``replicates``) and run on
a copy of the plugin under process and Ray execution: state they keep there does
not come back. What must come back travels in the replicate outcome (metrics,
artifact manifest). ``optimize()`` calls ``before_run`` once and ``after_run`` once.
``apply()`` calls ``before_run``, the worker-side hooks and ``after_run`` (with a one-replicate
Result); the artifact plugin stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..context import FrozenContext
    from ..engine.plan import ReplicateOutcome, RunSpec
    from ..experiment import Experiment
    from ..results import Result
    from ..steps import PipelineStep


class BasePlugin:
    """Override any hook; the defaults do nothing and are skipped on the hot path."""

    def init_hook(self, experiment: Experiment) -> None:
        """The experiment was created with this plugin."""

    def before_run(self, experiment: Experiment) -> None:
        """A run (or an optimize search) is about to start."""

    def before_replicate(self, experiment: RunSpec, ctx: FrozenContext) -> None:
        """A replicate's context is ready; the datasource has not run yet."""

    def before_step(self, experiment: RunSpec, step: PipelineStep) -> None:
        """A step is about to run."""

    def after_step(self, experiment: RunSpec, step: PipelineStep, data: Any, ctx: FrozenContext) -> None:
        """A step finished; ``ctx.artifacts`` holds what it added (``step_name`` set)."""

    def after_run(self, experiment: Experiment, result: Result) -> None:
        """The run finished and hypotheses were verified."""

    def run_experiment_loop(
        self, experiment: SimpleNamespace, replicate_fn: Callable[[int], list[ReplicateOutcome]]
    ) -> Any:
        """Upstream's execution hook; return ``NotImplemented`` unless this plugin executes replicates.

        ``experiment`` is a view of the run (``name``, ``id``, ``replicates``, ``pipeline``,
        ``datasource``); ``replicate_fn(i)`` runs every condition of the i-th replicate and
        returns their outcomes. Return the outcomes (or groups of them), or an awaitable of them.
        """
        return NotImplemented
