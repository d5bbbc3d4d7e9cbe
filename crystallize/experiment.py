"""``Experiment``: validate, run, optimize, apply. Orchestration only; the engine does the work."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .cli_hints import hint, resume_option
from .constants import BASELINE_CONDITION, FRAMEWORK_KEYS
from .datasource import DataSource, resolve_inputs
from .engine import search
from .engine.claimed import ClaimedRun
from .engine.driver import RunSession, setup_steps
from .engine.fold import RunFold
from .engine.identity import compute_identities
from .engine.plan import ReplicateOutcome, ReplicateTask, RunSpec
from .engine.replicate import NO_DATA, PreparedSpec, drive, replicate_program
from .engine.resume import build_plan, plan_differences
from .errors import ParameterError, ValidationError
from .hashing import stable_hash
from .hypothesis import Hypothesis
from .paths import check_segment
from .pipeline import Pipeline
from .plugins.artifacts import ArtifactPlugin
from .plugins.base import BasePlugin
from .plugins.execution import ExecutionPlugin, LegacyLoopExecutor, SerialExecution, overrides_loop
from .plugins.logging_plugin import LoggingPlugin
from .plugins.seed import SeedPlugin
from .results import Result
from .seeding import seed_stream
from .store import layout
from .store.claims import BlockClaims, cut_blocks
from .store.filesystem import Store
from .store.lease import Lease
from .store.locations import cache_disabled, cache_location, cache_signing_key
from .store.records import OutcomeFeed, RunRecorder, claim_version
from .store.repository import RunRepository
from .treatment import Treatment

if TYPE_CHECKING:
    from .builder import ExperimentBuilder
    from .context import FrozenContext
    from .execution.base import Executor
    from .optimizers import BaseOptimizer

logger = logging.getLogger(__name__)

P = TypeVar("P")

_DEFAULT_PLUGINS = (ArtifactPlugin, SeedPlugin, LoggingPlugin)


class Experiment:
    """A datasource, a pipeline, the conditions to compare and how many replicates of each."""

    def __init__(
        self,
        datasource: DataSource,
        pipeline: Pipeline,
        plugins: Sequence[BasePlugin] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        initial_ctx: Mapping[str, Any] | None = None,
        outputs: Sequence[Any] | None = None,
        treatments: Sequence[Treatment] | None = None,
        hypotheses: Sequence[Hypothesis] | None = None,
        replicates: int = 1,
    ) -> None:
        self.datasource = datasource
        self.pipeline = pipeline
        self.name = name
        self.description = description
        self.initial_ctx: dict[str, Any] = dict(initial_ctx or {})
        self.outputs: dict[str, Any] = {getattr(a, "name", str(i)): a for i, a in enumerate(outputs or [])}
        self.treatments: list[Treatment] = list(treatments or [])
        self.hypotheses: list[Hypothesis] = list(hypotheses or [])
        if isinstance(replicates, bool) or not isinstance(replicates, int):
            raise ParameterError(f"replicates must be an integer, but got {type(replicates).__name__}")
        self.replicates = replicates
        self.plugins: list[BasePlugin] = _with_defaults(list(plugins or []))
        self.last_optimization: Result | None = None
        self.strategy: str | None = None
        for output in self.outputs.values():
            if hasattr(output, "_attach_producer"):
                output._attach_producer(self)
        for plugin in self.plugins:
            plugin.init_hook(self)

    @classmethod
    def builder(cls, name: str | None = None) -> ExperimentBuilder:
        """A builder of this class (the builder is given its target, so it need not import this module)."""
        from .builder import ExperimentBuilder

        return ExperimentBuilder(name, experiment_class=cls)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], plugins: Sequence[BasePlugin] | None = None) -> Experiment:
        """The experiment of a folder holding ``config.yaml`` (or of that file); see ``crystallize.config``."""
        from .config import load_experiment

        return load_experiment(path, plugins=plugins, experiment_class=cls)

    @property
    def id(self) -> str:
        """The folder name of this experiment's runs: its name, else a digest of its pipeline."""
        if self.name:
            return self.name
        return "experiment_" + stable_hash(self.pipeline.fingerprint)[:10]

    def get_plugin(self, plugin_class: type[P]) -> P | None:
        """The first plugin of this class, or None."""
        return next((p for p in self.plugins if isinstance(p, plugin_class)), None)

    def _plugin(self, plugin_class: type[P]) -> P:
        """One of the default plugins, which ``__init__`` always adds."""
        plugin = self.get_plugin(plugin_class)
        assert plugin is not None, f"experiment '{self.id}' has no {plugin_class.__name__} in its plugins"
        return plugin

    # ------------------------------------------------------------------ artifacts

    def artifact_datasource(
        self,
        step: str,
        name: str = "data.json",
        condition: str = BASELINE_CONDITION,
        *,
        require_metadata: bool = False,
    ) -> DataSource:
        """A datasource giving the :class:`~pathlib.Path` of artifact ``name`` that step ``step`` of this
        experiment's newest finished run wrote, replicate by replicate (``condition``'s folder).

        ``step`` is the step's name or 0.27's folder name for it (``Write_ValuesStep``). Its
        ``replicates`` is that run's replicate count, which a consumer then runs. With
        ``require_metadata=True`` a missing run raises ``ArtifactNotFoundError`` (a ``FileNotFoundError``)
        here; otherwise the consumer's run reports it before any replicate starts.
        """
        from .artifact import ArtifactDataSource

        return ArtifactDataSource(self, step, name, condition, require_metadata=require_metadata)

    def _replicates_to_run(self, requested: int | None) -> int:
        """``requested``, else this experiment's count, else (as in 0.27) the count a datasource reading a
        producer's run declares; a consumer asking for more replicates than its producer has is an error."""
        wanted = self.replicates if requested is None else requested
        _check_replicates(wanted, "replicates")
        provided = _declared_replicates(self.datasource)
        if provided is None:
            return wanted
        if wanted > provided:
            raise ValidationError(
                f"Experiment '{self.id}' runs {wanted} replicates, but its datasource reads a producer run of "
                f"{provided}; replicate i reads the producer's replicate i, so run at most {provided} "
                "(or run the producer with more)"
            )
        return provided if requested is None else wanted

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Raise :class:`ValidationError` saying what is wrong, before any replicate runs."""
        if self.datasource is None or self.pipeline is None:
            missing = " and ".join(n for n in ("datasource", "pipeline") if getattr(self, n) is None)
            raise ValidationError(f"Experiment requires datasource and pipeline; {missing} is None")
        if not isinstance(self.datasource, DataSource):
            hint = (
                " (did you pass the factory instead of calling it, as in numbers()?)"
                if callable(self.datasource)
                else ""
            )
            raise ValidationError(f"datasource must be a DataSource, got {type(self.datasource).__name__}{hint}")
        if not isinstance(self.pipeline, Pipeline):
            raise ValidationError(f"pipeline must be a Pipeline, got {type(self.pipeline).__name__}")
        if not self.pipeline.steps:
            raise ValidationError("Pipeline must contain at least one step; the pipeline has no steps")
        if self.name is not None:
            check_segment(self.name, "experiment name")
        for index, step in enumerate(self.pipeline.steps):
            check_segment(step.name, f"Experiment '{self.id}': step {index + 1}'s name")
        reserved = sorted(set(self.initial_ctx) & FRAMEWORK_KEYS)
        if reserved:
            raise ValidationError(
                f"Experiment '{self.id}': initial_ctx sets {', '.join(repr(k) for k in reserved)}, which the "
                f"framework sets itself in every replicate ({_framework_keys()}); rename the key."
            )
        _check_replicates(self.replicates, "replicates")
        _check_treatments(self.treatments, self.id)
        _check_hypotheses(self.hypotheses)
        self._check_treatment_keys(self.treatments)

    def known_context_names(self) -> set[str]:
        """Names a treatment can usefully set: step and datasource parameters, initial_ctx keys."""
        names = set(self.initial_ctx) | set(FRAMEWORK_KEYS)
        for step in self.pipeline.steps:
            names.update(_injectable(step))
            names.update(getattr(step, "params", {}) or {})
        names.update(_source_parameters(self.datasource))
        return names

    def _check_treatment_keys(self, treatments: Iterable[Treatment]) -> None:
        """A reserved key is refused; a key that is nobody's parameter but close to one is almost surely a typo."""
        known = self.known_context_names()
        for treatment in treatments:
            for key in treatment.apply_map:
                if key in FRAMEWORK_KEYS:
                    raise ValidationError(
                        f"Experiment '{self.id}': treatment '{treatment.name}' sets '{key}', which the framework "
                        f"sets itself in every replicate ({_framework_keys()}); rename the key."
                    )
                if key in known:
                    continue
                close = difflib.get_close_matches(key, sorted(known - set(FRAMEWORK_KEYS)), n=1, cutoff=0.75)
                if close:
                    raise ValidationError(
                        f"Experiment '{self.id}': treatment '{treatment.name}' sets '{key}', which no step or "
                        f"datasource takes as a parameter; did you mean '{close[0]}'? If a step reads '{key}' "
                        f"from the context itself, give it a default in initial_ctx (initial_ctx={{'{key}': ...}})."
                    )

    # ------------------------------------------------------------------ run

    def run(
        self,
        *,
        treatments: Sequence[Treatment] | None = None,
        hypotheses: Sequence[Hypothesis] | None = None,
        replicates: int | None = None,
        strategy: str | None = None,
    ) -> Result:
        """Run baseline and every treatment for ``replicates`` replicates, then verify hypotheses."""
        self.validate()
        treatments = self.treatments if treatments is None else [_as_treatment(t) for t in treatments]
        hypotheses = self.hypotheses if hypotheses is None else list(hypotheses)
        replicates = self._replicates_to_run(replicates)
        _check_treatments(treatments, self.id)
        _check_hypotheses(hypotheses)
        self._check_treatment_keys(treatments)
        if hypotheses and not treatments:
            raise ValidationError(
                "Cannot verify hypotheses without treatments: hypotheses compare treatments with the baseline; "
                "add at least one treatment"
            )
        strategy = strategy if strategy is not None else self.strategy
        if strategy not in (None, "rerun", "resume"):
            raise ValidationError(f"unknown strategy {strategy!r}; use 'rerun' (a new version) or 'resume'")
        conditions: dict[str, Treatment | None] = {BASELINE_CONDITION: None}
        conditions.update({t.name: t for t in treatments})
        tasks = [ReplicateTask(c, r) for r in range(replicates) for c in conditions]
        resume = self._find_resumable() if strategy == "resume" else None
        with self._session("run", replicates, conditions, resume=resume) as session:
            fold = RunFold(list(conditions))
            if resume is not None:
                done = sum(1 for t in tasks if resume.outcomes.get(t) is not None and resume.outcomes[t].error is None)
                logger.info(
                    "Resuming '%s' v%d: %d replicate(s) recorded, %d to run",
                    self.id,
                    resume.version,
                    done,
                    len(tasks) - done,
                )
            shared = _claimed_run(session, tasks, resume)
            shared.execute(conditions, fold)
            _warn_unread_keys(session, fold, conditions)
            provenance = session.provenance(list(conditions), conditions)
            if resume is not None:
                provenance["resumed"] = {"version": resume.version, "reused": fold.completed - shared.ran}
            result = fold.build_result(hypotheses, replicates, provenance)
            session.finish(result)
        return result

    async def arun(
        self,
        *,
        treatments: Sequence[Treatment] | None = None,
        hypotheses: Sequence[Hypothesis] | None = None,
        replicates: int | None = None,
        strategy: str | None = None,
    ) -> Result:
        """``await experiment.arun(...)`` from async code (a notebook); same as ``run``."""
        return await asyncio.to_thread(
            self.run, treatments=treatments, hypotheses=hypotheses, replicates=replicates, strategy=strategy
        )

    # ------------------------------------------------------------------ optimize

    def optimize(
        self,
        optimizer: BaseOptimizer,
        num_trials: int,
        replicates_per_trial: int = 1,
    ) -> Treatment:
        """Ask → run the asked treatments x ``replicates_per_trial`` → tell, ``num_trials`` times.

        ``num_trials`` counts ``ask()`` rounds (as in Crystallize 0.27), not candidates: an
        optimizer that proposes several treatments per ask tries more. All treatments of one
        ask run side by side, on whatever executor the experiment uses; the executor never
        changes what is asked. Trials reuse replicate indices
        0..replicates_per_trial-1, so every candidate sees the same seeds. Those seeds come from
        the root seed's search stream, ``run()``'s from its main stream: a ``run()`` confirming
        the winner sees fresh replicates, and both remain a pure function of (root seed, stream,
        replicate index).
        """
        self.validate()
        _check_replicates(num_trials, "num_trials")
        _check_replicates(replicates_per_trial, "replicates_per_trial")
        metric = optimizer.objective.metric
        all_conditions: dict[str, Treatment | None] = {}
        history = search.start_history(optimizer)  # filled as trials finish, so tell() may already look at it
        with self._session("optimize", replicates_per_trial, {}) as session:
            fold = RunFold([])
            for trial in range(num_trials):
                asked = search.asked_treatments(optimizer, trial, self.id)
                if not asked:
                    logger.info("optimizer has no more candidates after %d trial(s)", trial)
                    break
                self._check_treatment_keys(asked)
                conditions = search.trial_conditions(asked, trial, all_conditions)
                fold.add_conditions(list(conditions))
                all_conditions.update(conditions)
                tasks = [ReplicateTask(c, r) for r in range(replicates_per_trial) for c in conditions]
                started = search.clock()
                session.execute(tasks, conditions, fold, label=f"trial {trial + 1}/{num_trials}")
                history.extend(search.trial_rows(fold, conditions, metric, trial, search.clock() - started))
                means = search.trial_scores(fold, conditions, metric, trial)
                optimizer.tell({metric: means[asked[0].name]} if len(asked) == 1 else means)
            _warn_unread_keys(session, fold, all_conditions)
            provenance = session.provenance(list(all_conditions), all_conditions)
            provenance["optimization"] = search.optimization_record(optimizer, history)
            result = fold.build_result([], replicates_per_trial, provenance)
            session.finish(result)
        self.last_optimization = result
        search.check_objective_recorded(self.id, fold, all_conditions, metric)
        return optimizer.get_best_treatment()

    async def aoptimize(
        self,
        optimizer: BaseOptimizer,
        num_trials: int,
        replicates_per_trial: int = 1,
    ) -> Treatment:
        """``await experiment.aoptimize(...)`` from async code; same as ``optimize``."""
        return await asyncio.to_thread(self.optimize, optimizer, num_trials, replicates_per_trial)

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        treatment: Treatment | str | None = None,
        *,
        data: Any = NO_DATA,
        seed: int | None = None,
    ) -> Any:
        """Run the pipeline once (up to the first ``exit_step``) and return its output.

        Step setup/teardown and every plugin hook run (``before_run``, the per-replicate
        hooks, then ``after_run`` with a one-replicate Result, as in Crystallize 0.27);
        nothing is stored as a run, so earlier runs' records stay as they were.
        """
        self.validate()
        chosen = self._resolve_treatment(treatment)
        condition = chosen.name if chosen is not None else BASELINE_CONDITION
        resolve_inputs(self.datasource)
        for plugin in self.plugins:
            plugin.before_run(self)
        with setup_steps(self.pipeline.steps, self.initial_ctx, self.id) as setup_ctx:
            spec = self._freeze_spec(setup_ctx, mode="apply", replicates=1, treatments=[chosen])
            program = replicate_program(
                PreparedSpec.of(spec),
                {condition: chosen},
                ReplicateTask(condition, 0),
                data=data,
                stop_after=self.pipeline.exit_index(),
                raise_errors=True,
                seed_override=seed,
            )
            outcome, output = drive(program)
        fold = RunFold([condition])
        fold.add(outcome)
        result = fold.build_result([], 1, {"experiment": self.id, "mode": "apply", "conditions": [condition]})
        for plugin in self.plugins:
            plugin.after_run(self, result)
        return output

    # ------------------------------------------------------------------ internals

    def _resolve_treatment(self, treatment: Treatment | str | None) -> Treatment | None:
        if treatment is None or isinstance(treatment, Treatment):
            return treatment
        if isinstance(treatment, str):
            for known in self.treatments:
                if known.name == treatment:
                    return known
            raise ValidationError(f"no treatment named {treatment!r}; known: {[t.name for t in self.treatments]}")
        return _as_treatment(treatment)

    def _freeze_spec(
        self,
        setup_ctx: FrozenContext,
        *,
        mode: str,
        replicates: int,
        version: int | None = None,
        treatments: Iterable[Treatment | None] = (),
    ) -> RunSpec:
        """The frozen spec workers run from: the context as step setup left it, the observer plugins,
        seeds, the data store's location, and every identity (fingerprints, code origins) made here on
        the driver. ``apply`` stores nothing, so its spec names no data store."""
        data_uri = None if mode == "apply" else self._plugin(ArtifactPlugin).store().location
        return RunSpec(
            name=self.id,
            datasource=self.datasource,
            pipeline=self.pipeline,
            initial_ctx=setup_ctx._raw_values(),
            identities=compute_identities(self.pipeline, self.datasource, [t for t in treatments if t is not None]),
            plugins=tuple(self._observer_plugins()),
            seeding=dataclasses.replace(self._plugin(SeedPlugin).config(), stream=seed_stream(mode)),
            replicates=replicates,
            cache_root=_cache_root(),
            cache_key=_cache_key(self.pipeline),
            signing_key=cache_signing_key(),
            mode=mode,
            version=version,
            description=self.description,
            data_uri=data_uri,
        )

    def _observer_plugins(self) -> list[BasePlugin]:
        return [p for p in self.plugins if not isinstance(p, ExecutionPlugin) and not overrides_loop(p)]

    def execution_plugin(self) -> BasePlugin | None:
        """The plugin that chooses where replicates run: the last execution plugin given (None: serial)."""
        chosen: BasePlugin | None = None
        for plugin in self.plugins:
            if isinstance(plugin, ExecutionPlugin) or overrides_loop(plugin):
                chosen = plugin
        return chosen

    def _executor(self) -> tuple[Executor, bool | None]:
        chosen = self.execution_plugin()
        if isinstance(chosen, ExecutionPlugin):
            return chosen.create_executor(), chosen.progress
        if chosen is not None:
            return LegacyLoopExecutor(chosen), getattr(chosen, "progress", False)
        return SerialExecution().create_executor(), None

    def _find_resumable(self) -> ResumePoint | None:
        """The latest version of this experiment and its records, or None when there is none."""
        repository = RunRepository(self._plugin(ArtifactPlugin).store())
        version = repository.latest(self.id, require="plan")  # abandoned claims (no plan) are skipped
        run = repository.open(self.id, version) if version is not None else None
        if run is None:
            if repository.versions(self.id):
                logger.info("No resumable run of '%s' (no plan.json in any version); starting a new run", self.id)
            else:
                logger.info("Nothing to resume for '%s'; starting a new run", self.id)
            return None
        if run.plan.get("mode") != "run":
            what = hint("it is an optimize() record, not a run()", "optimize() made it, and only runs resume")
            raise ValidationError(
                f"cannot resume '{self.id}' v{run.version}: {what}; run without {resume_option()} for a new version"
            )
        return ResumePoint(run.version, run.plan, run.outcomes, frozenset(run.read.parts) | frozenset(run.read.skipped))

    @contextlib.contextmanager
    def _session(
        self,
        mode: str,
        replicates: int,
        conditions: Mapping[str, Treatment | None],
        *,
        resume: ResumePoint | None = None,
    ) -> Iterator[RunSession]:
        """Claim (or reopen) a version, run hooks and step setup, freeze the spec, start the executor.

        A session that fails before any replicate's outcome came back (an unpicklable step, an
        executor that cannot start, Ctrl-C during setup) leaves no version behind: the folder it
        claimed is removed. A resumed version is never removed.
        """
        artifact_plugin = self._plugin(ArtifactPlugin)
        store = artifact_plugin.store()
        repository = RunRepository(store)
        repository.check_writable(self.id)
        fresh_folder = resume is None and (artifact_plugin.versioned or not repository.has_version(self.id, 0))
        try:
            store.remove_stale_temporaries(layout.experiment_dir(self.id))  # half-written files of killed runs
            if resume is not None:
                version = resume.version
            elif artifact_plugin.versioned:
                version = claim_version(store, self.id)
            else:
                version = 0
        except OSError as exc:
            raise repository.write_error(self.id, exc) from exc
        session: list[RunSession] = []
        lease = Lease(
            store,
            self.id,
            version,
            expires_after=artifact_plugin.lease_seconds,
            renew_every=artifact_plugin.lease_renew_seconds,
        )
        try:
            lease.start()  # before anything else: another run's retention must see this version as live
            with self._open_session(mode, replicates, conditions, store, version, resume, session) as opened:
                opened.holder = lease.holder
                yield opened
        except BaseException:
            lease.stop()
            if resume is None and (not session or session[0].received == 0):
                repository.discard(self.id, version, whole=fresh_folder)
            raise
        finally:
            lease.stop()  # an unfinished run's lease then expires by itself
        if store.exists(layout.run_file(self.id, version, layout.RUN_RECORD)):
            lease.release()

    @contextlib.contextmanager
    def _open_session(
        self,
        mode: str,
        replicates: int,
        conditions: Mapping[str, Treatment | None],
        store: Store,
        version: int,
        resume: ResumePoint | None,
        opened: list[RunSession],
    ) -> Iterator[RunSession]:
        artifact_plugin = self._plugin(ArtifactPlugin)
        seed_plugin = self._plugin(SeedPlugin)
        artifact_plugin.bind(self.id, version)
        for plugin in self.plugins:
            plugin.before_run(self)
        if resume is not None and seed_plugin.seed is None:
            seed_plugin.root_seed = resume.plan["root_seed"]
        resolve_inputs(self.datasource)
        with setup_steps(self.pipeline.steps, self.initial_ctx, self.id) as setup_ctx:
            spec = self._freeze_spec(
                setup_ctx, mode=mode, replicates=replicates, version=version, treatments=conditions.values()
            )
            recorder = RunRecorder(store, self.id, version)
            plan = build_plan(spec, conditions)
            if resume is not None:
                changes = plan_differences(resume.plan, plan)
                if changes:
                    raise ValidationError(
                        f"cannot resume '{self.id}' v{version}: the experiment changed since it ran:\n  - "
                        + "\n  - ".join(changes)
                        + f"\nRun without {resume_option()} to start a new version."
                    )
            else:
                try:
                    if not artifact_plugin.versioned:  # rerunning into v0: the old run's records must not mix in
                        RunRepository(store).reset(self.id, version)
                    recorder.write_plan(plan)
                except OSError as exc:
                    raise RunRepository(store).write_error(self.id, exc) from exc
            executor, progress = self._executor()
            try:
                spec = executor.start(spec) or spec  # what the workers run (None from older executors: unchanged)
                session = RunSession(self, spec, executor, progress, recorder)
                opened.append(session)
                yield session
            finally:
                recorder.flush()
                executor.stop()

    def __repr__(self) -> str:
        return (
            f"Experiment({self.id!r}, steps={self.pipeline.signature()!r}, "
            f"treatments={[t.name for t in self.treatments]}, replicates={self.replicates})"
        )


def _with_defaults(plugins: list[BasePlugin]) -> list[BasePlugin]:
    for plugin in plugins:
        if not isinstance(plugin, BasePlugin):
            raise ValidationError(f"plugins must be BasePlugin instances, got {type(plugin).__name__}")
    missing: list[BasePlugin] = [cls() for cls in _DEFAULT_PLUGINS if not any(isinstance(p, cls) for p in plugins)]
    if not any(isinstance(p, ExecutionPlugin) or overrides_loop(p) for p in plugins):
        missing.append(SerialExecution())
    return [*missing, *plugins]


def _injectable(part: Any) -> tuple[str, ...]:
    signature = getattr(part, "signature", None)
    return tuple(getattr(signature, "injectable", ()))


def _source_parameters(datasource: Any) -> set[str]:
    names = set(_injectable(datasource)) | set(getattr(datasource, "params", {}) or {})
    inputs = getattr(datasource, "inputs", None)
    if isinstance(inputs, Mapping):
        for inner in inputs.values():
            names |= _source_parameters(inner)
    return names


def _warn_unread_keys(session: RunSession, fold: RunFold, conditions: Mapping[str, Treatment | None]) -> None:
    """Warn (once per key) about treatment keys no replicate read: those treatments changed nothing."""
    by_key: dict[str, list[str]] = {}
    for name, keys in fold.unread_treatment_keys(conditions).items():
        for key in keys:
            by_key.setdefault(key, []).append(name)
    for key, names in by_key.items():
        shown = ", ".join(f"'{n}'" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        session.warn(
            f"Experiment '{session.spec.name}': treatment {shown} sets '{key}', but no replicate read it: "
            "no step or datasource uses that key, so it changed nothing. Check the name, or remove it."
        )


def _cache_root() -> str | None:
    return None if cache_disabled() else cache_location()


def _cache_key(pipeline: Pipeline) -> bytes | None:
    """The step cache's signing key, read here on the driver; None when no step uses the cache."""
    if cache_disabled() or not any(getattr(step, "cacheable", False) for step in pipeline.steps):
        return None
    return cache_signing_key()


@dataclass
class ResumePoint:
    """The version a resumed run continues, with its plan and recorded outcomes."""

    version: int
    plan: dict[str, Any]
    outcomes: dict[tuple[str, int], ReplicateOutcome]
    parts: frozenset[str] = frozenset()  # the outcome parts read for ``outcomes``


def _claimed_run(session: RunSession, tasks: list[ReplicateTask], resume: ResumePoint | None) -> ClaimedRun:
    """The session's share of its version's tasks, claimed block by block (see :mod:`.engine.claimed`)."""
    recorder = session.recorder
    assert recorder is not None and session.holder is not None, "run() sessions record and hold a lease"
    blocks = cut_blocks(tasks)
    claims = BlockClaims(recorder.store, recorder.experiment, recorder.version, session.holder, len(blocks))
    feed = OutcomeFeed(recorder.store, recorder.experiment, recorder.version, resume.parts if resume else ())
    recorded = resume.outcomes if resume is not None else {}
    return ClaimedRun(session, claims, blocks, recorded, lambda: feed.read_new(skip=recorder.written_parts))


def _as_treatment(value: Any) -> Treatment:
    if isinstance(value, Treatment):
        return value
    raise ValidationError(f"expected a Treatment, got {type(value).__name__}")


def _declared_replicates(datasource: Any) -> int | None:
    """The replicate count a datasource declares (``artifact_datasource``, ``Artifact.replicates`` set by the
    user, ``ExperimentInput`` of such); None when it declares none."""
    if hasattr(datasource, "declared_replicates"):  # an Artifact: what its user set, not what a run pinned
        count = datasource.declared_replicates
    else:
        count = getattr(datasource, "replicates", None)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _check_replicates(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):  # a TypeError too, as 0.27 raised for these
        raise ParameterError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValidationError(f"{what} must be a positive integer, got {value!r}")


def _check_treatments(treatments: Iterable[Any], experiment: str) -> None:
    seen: set[str] = set()
    for treatment in treatments:
        if not isinstance(treatment, Treatment):
            raise ValidationError(
                f"Experiment '{experiment}': treatments must be Treatment objects, got {type(treatment).__name__}"
            )
        if treatment.name == BASELINE_CONDITION:
            raise ValidationError(
                f"Experiment '{experiment}': '{BASELINE_CONDITION}' is reserved; give the treatment another name"
            )
        if treatment.name in seen:
            raise ValidationError(
                f"Experiment '{experiment}': two treatments are named '{treatment.name}'; names must be unique"
            )
        layout.check_condition_name(treatment.name, f"Experiment '{experiment}': treatment name")
        seen.add(treatment.name)


def _framework_keys() -> str:
    return ", ".join(f"'{k}'" for k in sorted(FRAMEWORK_KEYS))


def _check_hypotheses(hypotheses: Iterable[Any]) -> None:
    seen: set[str] = set()
    for hyp in hypotheses:
        if not isinstance(hyp, Hypothesis):
            raise ValidationError(
                f"hypotheses must be Hypothesis objects (made with @hypothesis), got {type(hyp).__name__}"
            )
        if hyp.name in seen:
            raise ValidationError(f"two hypotheses are named '{hyp.name}'; names must be unique")
        seen.add(hyp.name)
