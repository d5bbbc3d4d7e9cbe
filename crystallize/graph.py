"""``ExperimentGraph``: experiments that read each other's artifacts, run in dependency order.

A thin facade over ``Experiment.run``: it orders experiments (``graphlib``), links
artifacts whose producer is given by name, skips finished work on
``strategy="resume"``, and runs independent experiments side by side when every
experiment's executor says it can share its workers (``concurrent_runs``, as Ray does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

from .artifact import Artifact
from .constants import BASELINE_CONDITION
from .datasource import resolve_inputs
from .errors import ValidationError
from .plugins.artifacts import ArtifactPlugin
from .plugins.execution import ExecutionPlugin
from .runs import load_run
from .store import layout
from .store.repository import RunRepository
from .tracebacks import add_note

if TYPE_CHECKING:
    from .experiment import Experiment
    from .results import Result

logger = logging.getLogger(__name__)

_STRATEGIES = (None, "rerun", "resume")


class ExperimentGraph:
    """Experiments keyed by name (``Experiment.id``) and which ones each depends on."""

    def __init__(self, *experiments: Experiment) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._dependencies: dict[str, set[str]] = {}
        for experiment in experiments:
            self.add_experiment(experiment)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_experiments(cls, experiments: Iterable[Experiment]) -> ExperimentGraph:
        """A graph of ``experiments`` whose dependencies come from their ``Artifact`` datasources."""
        graph = cls(*experiments)
        graph.infer_dependencies()
        return graph

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ExperimentGraph:
        """A graph of the experiments configured in ``path``'s subfolders (one ``config.yaml`` each)."""
        from .config import load_experiment_folder

        return cls.from_experiments(load_experiment_folder(path))

    def add_experiment(self, experiment: Experiment) -> ExperimentGraph:
        if not callable(getattr(experiment, "run", None)) or not hasattr(experiment, "id"):
            raise ValidationError(f"an ExperimentGraph holds Experiments, got {type(experiment).__name__}")
        name = experiment.id
        known = self._experiments.get(name)
        if known is not None and known is not experiment:
            raise ValidationError(f"the graph already has an experiment named '{name}'; names must be unique")
        self._experiments[name] = experiment
        self._dependencies.setdefault(name, set())
        return self

    def add_dependency(self, downstream: Experiment | str, upstream: Experiment | str) -> ExperimentGraph:
        """``downstream`` runs after ``upstream`` has finished."""
        self._dependencies[self._key(downstream)].add(self._key(upstream))
        return self

    def infer_dependencies(self) -> ExperimentGraph:
        """Add a dependency for every ``Artifact`` an experiment reads (also inside ``ExperimentInput``).

        Producers given by name are linked to the graph's experiment of that name.
        """
        for name, experiment in self._experiments.items():
            for artifact in _artifacts(experiment.datasource):
                producer = self._producer_of(name, artifact)
                self._dependencies[name].add(producer)
        return self

    def _producer_of(self, consumer: str, artifact: Artifact) -> str:
        producer = artifact.producer
        if producer is None:
            raise ValidationError(
                f"experiment '{consumer}' reads artifact '{artifact.name}', which has no producer: declare it in "
                "outputs=[...] of the experiment that writes it, or pass producer='<experiment name>'"
            )
        if isinstance(producer, str):
            found = self._experiments.get(producer)
            if found is None:
                raise ValidationError(
                    f"experiment '{consumer}' reads artifact '{artifact.name}' from '{producer}', but the graph has "
                    f"no experiment named '{producer}' (it has: {', '.join(self._experiments) or 'none'})"
                )
            artifact._attach_producer(found)
            return producer
        key = producer.id
        if self._experiments.get(key) is not producer:
            raise ValidationError(
                f"experiment '{consumer}' reads artifact '{artifact.name}' from experiment '{key}', "
                "which is not in the graph; add it"
            )
        return key

    def _key(self, experiment: Experiment | str) -> str:
        if isinstance(experiment, str):
            if experiment not in self._experiments:
                known = ", ".join(self._experiments) or "none"
                raise ValidationError(f"the graph has no experiment named '{experiment}' (it has: {known})")
            return experiment
        self.add_experiment(experiment)
        return experiment.id

    # ------------------------------------------------------------------ views

    @property
    def experiments(self) -> dict[str, Experiment]:
        return dict(self._experiments)

    def dependencies(self, experiment: Experiment | str) -> set[str]:
        """Names of the experiments ``experiment`` waits for."""
        return set(self._dependencies[self._key(experiment)])

    def __getitem__(self, name: str) -> Experiment:
        return self._experiments[name]

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._experiments
        return any(e is item for e in self._experiments.values())

    def __len__(self) -> int:
        return len(self._experiments)

    def order(self) -> list[str]:
        """Experiment names in an order that runs every dependency first."""
        try:
            return list(TopologicalSorter(self._dependencies).static_order())
        except CycleError as exc:
            raise _cycle_error(exc) from None

    def visualize(self) -> str:
        """The run order, one experiment a line with what it waits for."""
        lines = []
        for name in self.order():
            after = sorted(self._dependencies[name])
            lines.append(f"{name}" + (f"  <- {', '.join(after)}" if after else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            order = " -> ".join(self.order())
        except ValidationError as exc:
            order = str(exc)
        return f"ExperimentGraph({order})"

    # ------------------------------------------------------------------ running

    def run(self, *, strategy: str | None = None, replicates: int | None = None) -> dict[str, Result]:
        """Run every experiment after its dependencies; returns their results by name.

        ``strategy="resume"`` skips an experiment whose latest run finished with no failed
        replicates, unchanged (steps, datasource, treatments, replicates) and with every
        declared output stored for every replicate, reopening its ``Result``; the others
        run with ``strategy="resume"``. When every experiment's execution plugin has
        ``concurrent_runs`` (Ray), experiments whose dependencies are done run at once.
        """
        if strategy not in _STRATEGIES:
            raise ValidationError(f"unknown strategy {strategy!r}; use 'rerun' (a new version) or 'resume'")
        if not self._experiments:
            return {}
        self.infer_dependencies()
        order = self.order()  # raises on a cycle before anything runs
        for name in order:
            self._experiments[name].validate()
        self._check_replicates(replicates)
        if len(order) > 1 and all(_runs_concurrently(e) for e in self._experiments.values()):
            for experiment in self._experiments.values():
                plugin = experiment.execution_plugin()
                if isinstance(plugin, ExecutionPlugin):  # always, as _runs_concurrently checked
                    plugin.prepare()  # connect (ray.init) here, on the main thread
            return self._run_concurrently(strategy, replicates)
        results: dict[str, Result] = {}
        for name in order:
            results[name] = self._run_one(name, strategy, replicates)
        return results

    def _run_concurrently(self, strategy: str | None, replicates: int | None) -> dict[str, Result]:
        sorter = TopologicalSorter(self._dependencies)
        sorter.prepare()
        results: dict[str, Result] = {}
        running: dict[Future[Result], str] = {}
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=len(self._experiments), thread_name_prefix="crystallize-graph")
        try:
            while sorter.is_active():
                if failure is None:
                    for name in sorter.get_ready():
                        running[pool.submit(self._run_one, name, strategy, replicates)] = name
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    try:
                        results[name] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - the others finish, then the first error is raised
                        failure = failure or exc
                        continue
                    sorter.done(name)
        except BaseException:  # Ctrl-C on the driver: start nothing more (running experiments finish their run)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if failure is not None:
            raise failure
        return {name: results[name] for name in self.order() if name in results}

    def _run_one(self, name: str, strategy: str | None, replicates: int | None) -> Result:
        experiment = self._experiments[name]
        effective = strategy if strategy is not None else getattr(experiment, "strategy", None)
        try:
            if effective == "resume":
                state, reopened = self._resume_state(experiment, replicates)
                if reopened is not None:
                    return reopened
                if state == "outputs-missing":  # every replicate is recorded as done: resuming would redo nothing
                    return experiment.run(strategy="rerun", replicates=replicates)
            return experiment.run(strategy=strategy, replicates=replicates)
        except Exception as exc:
            add_note(exc, f"(while running experiment '{name}' of the graph)")
            raise

    def _resume_state(self, experiment: Experiment, replicates: int | None) -> tuple[str, Result | None]:
        """``("complete", stored Result)`` when nothing is left to do for ``experiment``; else why not
        (``"outputs-missing"`` for a finished, unchanged run without failures that lacks declared outputs)."""
        name = experiment.id
        plugin = experiment.get_plugin(ArtifactPlugin)
        if plugin is None:
            return "no-store", None
        store = plugin.store()
        repository = RunRepository(store)
        latest = repository.latest(name, require="plan")  # abandoned claims (no plan) are skipped
        run = repository.open(name, latest) if latest is not None else None
        if run is None or run.plan.get("mode") != "run":
            return "no-run", None
        version, plan, record = run.version, run.plan, run.record
        if record is None:
            logger.info("'%s' v%d did not finish; resuming it", name, version)
            return "unfinished", None
        if any(record.get("errors", {}).values()):
            logger.info("'%s' v%d has failed replicates; resuming it", name, version)
            return "failed", None
        changes = _plan_changes(experiment, plan, replicates)
        if changes:
            logger.info("'%s' changed since v%d ran (%s); not skipping it", name, version, "; ".join(changes))
            return "changed", None
        count = int(plan["replicates"])
        for output in experiment.outputs.values():
            exists_for = getattr(output, "exists_for", None)
            if exists_for is None:
                continue
            missing = [r for r in range(count) if not exists_for(store, name, version, r)]
            if missing:
                logger.warning(
                    "'%s' v%d finished but lacks output '%s' for replicate(s) %s; running it again as a new version",
                    name,
                    version,
                    getattr(output, "name", output),
                    missing[:10],
                )
                return "outputs-missing", None
        logger.info("'%s' v%d is complete; skipping it", name, version)
        return "complete", load_run(f"{store.location.rstrip('/')}/{layout.version_dir(name, version)}")

    def _check_replicates(self, replicates: int | None) -> None:
        """A consumer's replicate i reads its producer's replicate i: the producer must run as many."""
        if replicates is not None:
            return
        for name, experiment in self._experiments.items():
            for artifact in _artifacts(experiment.datasource):
                producer = artifact.producer
                if producer is None or isinstance(producer, str) or producer.id not in self._experiments:
                    continue
                if experiment.replicates > producer.replicates:
                    raise ValidationError(
                        f"experiment '{name}' runs {experiment.replicates} replicates but reads artifact "
                        f"'{artifact.name}' of '{producer.id}', which runs {producer.replicates}; replicate i "
                        "reads the producer's replicate i, so give the producer at least as many"
                    )


def _artifacts(datasource: Any) -> Iterator[Artifact]:
    """Every ``Artifact`` in a datasource tree (``ExperimentInput`` nests them under ``inputs``)."""
    if isinstance(datasource, Artifact):
        yield datasource
        return
    inputs = getattr(datasource, "inputs", None)
    if isinstance(inputs, Mapping):
        for inner in inputs.values():
            yield from _artifacts(inner)


def _plan_changes(experiment: Experiment, stored: Mapping[str, Any], replicates: int | None) -> list[str]:
    """What differs between a stored plan and the experiment now, among what can be known without running
    step setup (steps, datasource, conditions, treatments, replicates). A full check happens on resume."""
    from .engine.resume import describe_work, plan_differences

    try:
        resolve_inputs(experiment.datasource)  # an Artifact datasource pins the producer run it would read now
    except Exception as exc:  # noqa: BLE001 - the run itself will raise this with its message
        return [str(exc)]
    conditions = {BASELINE_CONDITION: None, **{t.name: t for t in experiment.treatments}}
    current = {
        **stored,
        "replicates": replicates if replicates is not None else experiment.replicates,
        **describe_work(experiment.pipeline, experiment.datasource, conditions),
    }
    return plan_differences(stored, current)


def _runs_concurrently(experiment: Experiment) -> bool:
    """Whether ``experiment``'s executor allows several runs at once (``Executor.concurrent_runs``)."""
    chosen = experiment.execution_plugin()
    return isinstance(chosen, ExecutionPlugin) and chosen.create_executor().concurrent_runs


def _cycle_error(exc: CycleError) -> ValidationError:
    cycle = [str(node) for node in exc.args[1]] if len(exc.args) > 1 else []
    return ValidationError(f"the experiment graph has a cycle: {' -> '.join(cycle)}; remove one of these dependencies")
