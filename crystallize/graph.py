"""``ExperimentGraph``: experiments that read each other's artifacts, run in dependency order.

A thin facade over ``Experiment.run``: it orders experiments (``graphlib``), links
artifacts whose producer is given by name, gives each experiment its parents' treatments
merged with its own, skips finished work on ``strategy="resume"``, and runs independent
experiments side by side when every experiment's executor says it can share its workers
(``concurrent_runs``, as Ray does).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

from .artifact import Artifact
from .config.references import find_experiments_root
from .constants import BASELINE_CONDITION
from .datasource import resolve_inputs
from .errors import ValidationError
from .plugins.artifacts import ArtifactPlugin
from .plugins.execution import ExecutionPlugin
from .runs import open_result
from .store.repository import RunRepository
from .tracebacks import add_note

if TYPE_CHECKING:
    from .experiment import Experiment
    from .results import Result
    from .treatment import Treatment

__all__ = ["ExperimentGraph", "find_experiments_root"]

logger = logging.getLogger(__name__)

_STRATEGIES = (None, "rerun", "resume")

Notify = Callable[[str, str], None]  # (status, experiment name): "running" / "completed"


class ExperimentGraph:
    """Experiments keyed by name (``Experiment.id``) and which ones each depends on.

    Given experiments, the graph infers their dependencies from their ``Artifact``
    datasources and refuses a cycle at once. ``name`` defaults to the name of the one
    experiment nothing depends on (``"ExperimentGraph"`` when there are several).
    """

    def __init__(self, *experiments: Experiment, name: str | None = None) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._dependencies: dict[str, set[str]] = {}
        self._name = name
        for experiment in experiments:
            self.add_experiment(experiment)
        if experiments:
            self.infer_dependencies()
            self.order()  # a cycle is an error when the graph is built

    # ------------------------------------------------------------------ building

    @classmethod
    def from_experiments(cls, experiments: Iterable[Experiment]) -> ExperimentGraph:
        """A graph of ``experiments`` whose dependencies come from their ``Artifact`` datasources."""
        return cls(*experiments)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ExperimentGraph:
        """The graph of a ``config.yaml`` and the experiments it reads from, found by name in sibling
        folders (and under the ``experiments`` root, as 0.27 finds them); given a folder, the experiments
        of its subfolders (one ``config.yaml`` each)."""
        if os.path.isfile(path) or os.fspath(path).endswith((".yaml", ".yml")):
            from .config import load_experiment_graph

            return cls.from_experiments(load_experiment_graph(path))
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
                f"Artifact '{artifact.name}' has no producing experiment: experiment '{consumer}' reads artifact "
                f"'{artifact.name}', which has no producer; declare it in outputs=[...] of the experiment that "
                "writes it, or pass producer='<experiment name>'"
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

    @property
    def name(self) -> str | None:
        """The given name, else the final experiment's (the one nothing depends on)."""
        if self._name is not None or not self._experiments:
            return self._name
        needed = set().union(*self._dependencies.values())
        final = [n for n in self._experiments if n not in needed]
        return final[0] if len(final) == 1 else "ExperimentGraph"

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def treatments_for(
        self, experiment: Experiment | str, treatments: Sequence[Treatment] | None = None
    ) -> list[Treatment]:
        """The treatments ``experiment`` runs in this graph: ``treatments`` when given (they override);
        else its parents' (recursively), merged with its own, which win on a shared name."""
        if treatments is not None:
            return list(treatments)
        name = self._key(experiment)
        merged: dict[str, Treatment] = {}
        memo: dict[str, list[Treatment]] = {}
        for node in self.order():  # parents before children
            inherited: dict[str, Treatment] = {}
            for parent in (p for p in self._experiments if p in self._dependencies[node]):
                inherited.update((t.name, t) for t in memo[parent])
            inherited.update((t.name, t) for t in self._experiments[node].treatments)
            memo[node] = list(inherited.values())
            if node == name:
                merged = inherited
                break
        return list(merged.values())

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

    def run(
        self,
        treatments: Sequence[Treatment] | None = None,
        replicates: int | None = None,
        strategy: str | None = None,
    ) -> dict[str, Result]:
        """Run every experiment after its dependencies; returns their results by name.

        Each experiment runs its parents' treatments merged with its own (:meth:`treatments_for`);
        ``treatments`` given here are what every experiment runs instead. ``strategy="resume"``
        skips an experiment whose latest run finished with no failed replicates, unchanged
        (steps, datasource, treatments, replicates) and with every output a downstream
        experiment reads stored for every replicate, reopening its ``Result``; the others run
        with ``strategy="resume"``. When every experiment's execution plugin has
        ``concurrent_runs`` (Ray), experiments whose dependencies are done run at once.
        """
        return self._run(treatments, replicates, strategy, None)

    async def arun(
        self,
        treatments: Sequence[Treatment] | None = None,
        replicates: int | None = None,
        strategy: str | None = None,
        progress_callback: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> dict[str, Result]:
        """``await graph.arun(...)``: as :meth:`run`, off the event loop; ``progress_callback(status, name)``
        is awaited on this loop with ``"running"`` before an experiment runs and ``"completed"`` after
        (only ``"completed"`` for one that resume skips)."""
        notify: Notify | None = None
        if progress_callback is not None:
            loop = asyncio.get_running_loop()
            callback = progress_callback

            def notify(status: str, name: str) -> None:
                asyncio.run_coroutine_threadsafe(_called(callback, status, name), loop).result()

        return await asyncio.to_thread(self._run, treatments, replicates, strategy, notify)

    def _run(
        self,
        treatments: Sequence[Treatment] | None,
        replicates: int | None,
        strategy: str | None,
        notify: Notify | None,
    ) -> dict[str, Result]:
        if strategy not in _STRATEGIES:
            raise ValidationError(f"unknown strategy {strategy!r}; use 'rerun' (a new version) or 'resume'")
        if not self._experiments:
            return {}
        self.infer_dependencies()
        order = self.order()  # raises on a cycle before anything runs
        for name in order:
            self._experiments[name].validate()
        self._check_replicates(replicates)
        conditions = {name: self.treatments_for(name, treatments) for name in order}
        job = _Job(strategy, replicates, conditions, notify)
        if len(order) > 1 and all(_runs_concurrently(e) for e in self._experiments.values()):
            for experiment in self._experiments.values():
                plugin = experiment.execution_plugin()
                if isinstance(plugin, ExecutionPlugin):  # always, as _runs_concurrently checked
                    plugin.prepare()  # connect (ray.init) here, on the main thread
            return self._run_concurrently(job)
        results: dict[str, Result] = {}
        for name in order:
            results[name] = self._run_one(name, job)
        return results

    def _run_concurrently(self, job: _Job) -> dict[str, Result]:
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
                        running[pool.submit(self._run_one, name, job)] = name
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

    def _run_one(self, name: str, job: _Job) -> Result:
        experiment = self._experiments[name]
        effective = job.strategy if job.strategy is not None else getattr(experiment, "strategy", None)
        treatments = job.treatments[name]
        try:
            if effective == "resume":
                state, reopened = self._resume_state(experiment, job.replicates, treatments)
                if reopened is not None:
                    job.tell("completed", name)
                    return reopened
                if state == "outputs-missing":  # every replicate is recorded as done: resuming would redo nothing
                    effective = "rerun"
                elif state == "changed" and self._dependencies[name] & job.ran:
                    # an upstream experiment made a new run just now: its readers start a new version too
                    logger.info("'%s' reads experiments that ran again; running it as a new version", name)
                    effective = "rerun"
            job.tell("running", name)
            result = experiment.run(treatments=treatments, replicates=job.replicates, strategy=effective)
            job.ran.add(name)
        except Exception as exc:
            add_note(exc, f"(while running experiment '{name}' of the graph)")
            raise
        job.tell("completed", name)
        return result

    def _read_downstream(self, name: str) -> list[Artifact]:
        """The artifacts of ``name`` that experiments of this graph read."""
        producer = self._experiments[name]
        read = []
        for consumer, after in self._dependencies.items():
            if name not in after:
                continue
            for artifact in _artifacts(self._experiments[consumer].datasource):
                source = artifact.producer
                if source is producer or source == name:
                    read.append(artifact)
        return read

    def _resume_state(
        self, experiment: Experiment, replicates: int | None, treatments: Sequence[Treatment]
    ) -> tuple[str, Result | None]:
        """``("complete", stored Result)`` when nothing is left to do for ``experiment``; else why not
        (``"outputs-missing"`` for a finished, unchanged run without failures that lacks an output a
        downstream experiment reads; outputs nothing here reads are not checked)."""
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
        changes = _plan_changes(experiment, plan, replicates, treatments)
        if changes:
            logger.info("'%s' changed since v%d ran (%s); not skipping it", name, version, "; ".join(changes))
            return "changed", None
        count = int(plan["replicates"])
        for output in self._read_downstream(name):
            exists_for = getattr(output, "exists_for", None)
            if exists_for is None:
                continue
            missing = [r for r in range(count) if not exists_for(store, name, version, r)]
            if missing:
                logger.warning(
                    "'%s' v%d finished but lacks output '%s', which a downstream experiment reads, for "
                    "replicate(s) %s; running it again as a new version",
                    name,
                    version,
                    getattr(output, "name", output),
                    missing[:10],
                )
                return "outputs-missing", None
        logger.info("'%s' v%d is complete; skipping it", name, version)
        return "complete", open_result(repository, name, version)

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


def _plan_changes(
    experiment: Experiment, stored: Mapping[str, Any], replicates: int | None, treatments: Sequence[Treatment]
) -> list[str]:
    """What differs between a stored plan and the experiment now, among what can be known without running
    step setup (steps, datasource, conditions, treatments, replicates). A full check happens on resume."""
    from .engine.resume import describe_work, plan_differences

    try:
        resolve_inputs(experiment.datasource)  # an Artifact datasource pins the producer run it would read now
    except Exception as exc:  # noqa: BLE001 - the run itself will raise this with its message
        return [str(exc)]
    conditions = {BASELINE_CONDITION: None, **{t.name: t for t in treatments}}
    try:
        count = experiment._replicates_to_run(replicates)  # a consumer may take its producer's count
    except Exception as exc:  # noqa: BLE001 - the run itself will raise this with its message
        return [str(exc)]
    current = {
        **stored,
        "replicates": count,
        **describe_work(experiment.pipeline, experiment.datasource, conditions),
    }
    return plan_differences(stored, current)


def _runs_concurrently(experiment: Experiment) -> bool:
    """Whether ``experiment``'s executor allows several runs at once (``Executor.concurrent_runs``)."""
    chosen = experiment.execution_plugin()
    return isinstance(chosen, ExecutionPlugin) and chosen.create_executor().concurrent_runs


def _cycle_error(exc: CycleError) -> ValidationError:
    cycle = [str(node) for node in exc.args[1]] if len(exc.args) > 1 else []
    return ValidationError(
        f"Experiment graph contains cycles; cycle: {' -> '.join(cycle)}; remove one of these dependencies"
    )


class _Job:
    """What one ``run()`` of the graph asks of each experiment."""

    def __init__(
        self,
        strategy: str | None,
        replicates: int | None,
        treatments: Mapping[str, list[Treatment]],
        notify: Notify | None,
    ) -> None:
        self.strategy = strategy
        self.replicates = replicates
        self.treatments = treatments
        self.notify = notify
        self.ran: set[str] = set()  # experiments that ran in this job (not reopened by resume)

    def tell(self, status: str, name: str) -> None:
        if self.notify is not None:
            self.notify(status, name)


async def _called(callback: Callable[[str, str], Awaitable[None] | None], status: str, name: str) -> None:
    """``callback(status, name)`` called and awaited on the caller's loop (a plain function works too)."""
    value = callback(status, name)
    if value is not None:
        await value
