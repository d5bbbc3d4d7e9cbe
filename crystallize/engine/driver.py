"""Driver side of a run: hooks, step setup, the frozen spec, the executor and the progress bar."""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import provenance as run_provenance
from .._version import __version__
from ..cli_hints import hint
from ..constants import FRAMEWORK_KEYS
from ..context import FrozenContext, _read_only
from ..errors import PipelineExecutionError, ValidationError, step_failure
from ..execution.base import Executor
from . import gc_pacing
from .fold import RunFold
from .plan import Conditions, ReplicateTask, RunSpec
from .progress import make_reporter

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..results import Result
    from ..steps import PipelineStep
    from ..store.records import RunRecorder
    from ..treatment import Treatment
    from .plan import ReplicateOutcome

logger = logging.getLogger(__name__)


class RunSession:
    """One run (or one whole ``optimize()``): the spec is frozen and shipped once, here.

    ``spec`` is the one ``executor.start`` returned: what the workers run.
    """

    def __init__(
        self,
        experiment: Experiment,
        spec: RunSpec,
        executor: Executor,
        progress: bool | None,
        recorder: RunRecorder | None = None,
    ) -> None:
        self.experiment = experiment
        self.recorder = recorder
        self.spec = spec
        self.executor = executor
        self.progress = progress
        self.started_wall = datetime.now(timezone.utc)
        self.started = time.perf_counter()
        self.warnings: list[str] = []
        self.received = 0  # outcomes that came back; a session that got none leaves no version behind
        self.holder: str | None = None  # this session's holder id, for block claims (set by the experiment)
        # git state, versions, host: taken as the run starts (the code that runs is the code at start)
        self.environment = run_provenance.EnvironmentCapture([*experiment.pipeline.steps, experiment.datasource])
        if executor.shares_global_rng():
            self.warn(
                f"Experiment '{spec.name}': the thread executor runs {executor.parallelism()} replicates at once "
                "in one process, sharing the global random/numpy.random generators, so steps that draw from "
                "them give different numbers from run to run. Draw from ctx.rng (a NumPy Generator seeded "
                "per replicate, reproducible under every executor), or use "
                + hint("ParallelExecution(executor_type='process') or RayExecution.", "--executor process or ray.")
            )

    def warn(self, message: str) -> None:
        """Log ``message`` once and keep it for the result's provenance and the run record."""
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("%s", message)

    @property
    def parallelism(self) -> int:
        return self.executor.parallelism()

    def execute(
        self,
        tasks: Sequence[ReplicateTask],
        conditions: Conditions,
        fold: RunFold,
        label: str = "",
        *,
        after_each: Callable[[tuple[str, int]], None] | None = None,
    ) -> None:
        """Run ``tasks`` and fold (and record) each outcome as it arrives, reporting progress.

        ``after_each`` hears of each task once its outcome is folded and handed to the recorder.
        """
        artifact_writer = self._driver_side_artifact_writer()
        record = self.recorder.record if self.recorder is not None else None
        add = fold.add
        with gc_pacing.relaxed(), make_reporter(self.spec.name, label, tasks, self.progress) as reporter:
            update = reporter.update
            for outcome in self.executor.map(tasks, conditions):
                self.received += 1
                if artifact_writer is not None and outcome.artifacts:
                    artifact_writer(outcome)
                add(outcome)
                if record is not None:
                    record(outcome)
                update(outcome)
                if after_each is not None:
                    after_each((outcome.condition, outcome.replicate))

    def flush_records(self) -> None:
        """Publish the outcomes recorded so far (before a block is marked finished)."""
        if self.recorder is not None:
            self.recorder.flush()

    def published_parts(self) -> int:
        """How many outcome parts this session has published; grows with each flush."""
        return self.recorder.published if self.recorder is not None else 0

    def _driver_side_artifact_writer(self) -> Callable[[ReplicateOutcome], None] | None:
        if not self.spec.artifacts_via_driver:
            return None
        for plugin in self.experiment.plugins:
            if hasattr(plugin, "store_from_driver"):
                return plugin.store_from_driver
        return None

    def finish(self, result: Result) -> None:
        """Write the run records (``run.json`` last), then call every plugin's ``after_run``."""
        if self.recorder is not None:
            self.recorder.finish(result)
        for plugin in self.experiment.plugins:
            plugin.after_run(self.experiment, result)

    def provenance(self, conditions: Sequence[str], treatments: Mapping[str, Treatment | None]) -> dict[str, Any]:
        spec = self.spec
        return {
            "experiment": spec.name,
            "description": spec.description,
            "mode": spec.mode,
            "version": spec.version,
            "root_seed": spec.seeding.root_seed,
            "auto_seed": spec.seeding.auto_seed,
            "seed_stream": spec.seeding.stream,
            "replicates": spec.replicates,
            "conditions": list(conditions),
            "treatments": {name: run_provenance.describe_treatment(t) for name, t in treatments.items()},
            "pipeline_signature": spec.pipeline.signature(),
            "pipeline_fingerprint": spec.pipeline.fingerprint,
            "datasource": getattr(spec.datasource, "name", type(spec.datasource).__name__),
            "executor": self.executor.describe(),
            "crystallize_version": __version__,
            "python": platform.python_version(),
            **self.environment.result(),
            "started_at": self.started_wall.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "wall_seconds": time.perf_counter() - self.started,
            "warnings": list(self.warnings),
        }


@contextlib.contextmanager
def setup_steps(
    steps: Sequence[PipelineStep], initial_ctx: Mapping[str, Any], experiment: str
) -> Iterator[FrozenContext]:
    """Call every step's ``setup`` on a fresh context (so a second run starts clean), then ``teardown``."""
    # Values stay shared with initial_ctx and are copied on first read, so a setup() that
    # changes a list it reads does not change experiment.initial_ctx.
    ctx = FrozenContext._trusted({k: _read_only(v) for k, v in initial_ctx.items()}, shared=initial_ctx)
    done: list[PipelineStep] = []
    try:
        for step in steps:
            try:
                step.setup(ctx)
            except PipelineExecutionError:
                raise
            except Exception as exc:  # our own errors too: the message must name the step whose setup failed
                # still the step's own exception class, as 0.27 let a setup() error through unwrapped
                raise step_failure(f"{step.name}.setup", exc, experiment=experiment) from exc
            done.append(step)
            reserved = sorted(FRAMEWORK_KEYS.intersection(ctx.keys()))
            if reserved:
                raise ValidationError(
                    f"Experiment '{experiment}': setup() of step '{step.name}' added {reserved}, which the "
                    "framework sets itself in every replicate; use another key name."
                )
        yield ctx
    finally:
        for step in reversed(done):
            try:
                step.teardown(ctx)
            except Exception:
                logger.exception("teardown of step '%s' failed", step.name)
