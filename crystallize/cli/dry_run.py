"""``crystallize run TARGET --dry-run``: what a run would do, without running it.

It reads what the target declares and what the data store already holds, and says: the
experiments in the order they would run, each one's conditions x replicates (the tasks),
how the executor would batch them, where Ray would run, which version the run would write
or resume, and where the step cache is. Nothing here runs a step, connects to or starts an
executor, claims a version or creates a folder: the store is only listed and read.

Batch sizes are not known before a run: the executors size batches by the replicates'
measured durations (:mod:`crystallize.engine.batching`), so the plan says how they are sized
rather than inventing a count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..constants import BASELINE_CONDITION
from ..engine.batching import MAX_BATCH, TARGET_BATCH_SECONDS
from ..engine.plan import ReplicateTask
from ..plugins.artifacts import ArtifactPlugin
from ..plugins.execution import AsyncExecution, ExecutionPlugin, ParallelExecution, SerialExecution, overrides_loop
from ..plugins.seed import SeedPlugin
from ..store import layout
from ..store.locations import NO_CACHE_ENV, cache_disabled, cache_location
from ..store.records import list_versions
from ..store.repository import RunRepository
from .targets import Target, display_path

RAY_ADDRESS_ENV = "RAY_ADDRESS"


@dataclass
class ExperimentPlan:
    """What one experiment of the target would do."""

    name: str
    conditions: list[str]
    replicates: int
    tasks: int
    to_run: int
    executor: list[str]
    data: str
    cache: str
    seed: str
    notes: list[str] = field(default_factory=list)
    skipped: bool = False
    after: list[str] = field(default_factory=list)


def plan_target(
    target: Target, *, resume: bool, replicates: int | None, no_cache: bool = False
) -> tuple[list[ExperimentPlan], list[str]]:
    """The plan of every experiment of ``target``, in run order, and notes about the target as a whole."""
    if target.kind == "experiment":
        experiment = target.obj
        experiment.validate()
        return [_plan_one(experiment, list(experiment.treatments), resume, replicates, no_cache, None)], []
    graph = target.obj
    graph.infer_dependencies()
    order = graph.order()  # dependencies first; a cycle is an error, as in a run
    experiments = graph.experiments
    for name in order:
        experiments[name].validate()
    check = getattr(graph, "_check_replicates", None)
    if check is not None:
        check(replicates)  # a consumer running more replicates than its producer: the run's error, now
    plans = []
    for name in order:
        experiment = experiments[name]
        plan = _plan_one(experiment, graph.treatments_for(name), resume, replicates, no_cache, graph)
        plan.after = sorted(graph.dependencies(name))
        plans.append(plan)
    notes = []
    if len(order) > 1:
        if all(_concurrent(e) for e in experiments.values()):
            notes.append("experiments whose dependencies are done run side by side (the executor shares its workers)")
        else:
            notes.append("experiments run one after another, in this order")
    return plans, notes


def _plan_one(
    experiment: Any,
    treatments: Sequence[Any],
    resume: bool,
    replicates: int | None,
    no_cache: bool,
    graph: Any,
) -> ExperimentPlan:
    conditions = [BASELINE_CONDITION, *(t.name for t in treatments)]
    notes: list[str] = []
    try:
        count = experiment._replicates_to_run(replicates)
    except Exception as exc:  # noqa: BLE001 - the run would raise this; the plan says it instead
        count = replicates if replicates is not None else experiment.replicates
        notes.append(f"the run would stop: {exc}")
    tasks = len(conditions) * count
    strategy = "resume" if resume else getattr(experiment, "strategy", None)
    plan = ExperimentPlan(
        name=experiment.id,
        conditions=conditions,
        replicates=count,
        tasks=tasks,
        to_run=tasks,
        executor=executor_lines(experiment.execution_plugin(), tasks),
        data="",
        cache=cache_text(experiment, no_cache),
        seed=seed_text(experiment),
        notes=notes,
    )
    if _remote_cluster(experiment.execution_plugin()) and _local_store(experiment):
        notes.append(
            "on a cluster of several nodes the local data folder is written by the driver (artifacts travel "
            "through Ray's object store) and cached step results are not kept; a shared store (s3://...) keeps both"
        )
    if graph is not None and strategy == "resume" and _skipped_by_graph(graph, experiment, replicates, treatments):
        plan.skipped = True
        plan.to_run = 0
    plan.data = data_text(experiment, plan, treatments, resume=strategy == "resume")
    return plan


def _skipped_by_graph(graph: Any, experiment: Any, replicates: int | None, treatments: Sequence[Any]) -> bool:
    """Whether the graph's resume would reopen the stored result instead of running (only reads the store)."""
    state = getattr(graph, "_resume_state", None)
    if state is None:
        return False
    try:
        found, _ = state(experiment, replicates, list(treatments))
    except Exception:  # noqa: BLE001 - the run itself reports what is wrong with the stored run
        return False
    return found == "complete"


def _remote_cluster(plugin: Any) -> bool:
    address = getattr(plugin, "address", None) or os.environ.get(RAY_ADDRESS_ENV)
    return isinstance(plugin, ExecutionPlugin) and hasattr(plugin, "address") and address not in (None, "local")


def _local_store(experiment: Any) -> bool:
    plugin = experiment.get_plugin(ArtifactPlugin)
    return plugin is not None and "://" not in plugin.store().location


def _concurrent(experiment: Any) -> bool:
    plugin = experiment.execution_plugin()
    return isinstance(plugin, ExecutionPlugin) and bool(plugin.create_executor().concurrent_runs)


# ---------------------------------------------------------------- executor


def executor_lines(plugin: Any, tasks: int) -> list[str]:
    """Where the replicates would run and how the tasks would be batched."""
    adaptive = (
        f"1 replicate each until a duration is measured, then sized to ~{TARGET_BATCH_SECONDS * 1000:.0f} ms "
        f"of work each from the measured durations (at most 2x the previous batch, at most {MAX_BATCH})"
    )
    unknown_count = f"the count depends on those durations (1 to {tasks} batches)"
    if plugin is None or isinstance(plugin, SerialExecution):
        return ["serial: in this process, one replicate after another (no batches)"]
    if isinstance(plugin, ParallelExecution):
        kind = plugin.executor_type
        cpus = os.cpu_count() or 1
        workers = plugin.max_workers or (min(32, cpus + 4) if kind == "thread" else cpus)
        default = "" if plugin.max_workers else " (the default)"
        what = "threads of this process" if kind == "thread" else "worker processes"
        lines = [f"{kind}: {workers} {what}{default}"]
        lines.append(
            _fixed_batches(plugin.batch_size, tasks)
            or f"batches: {adaptive}, smaller near the end so every worker gets a share; {unknown_count}"
        )
        return lines
    if isinstance(plugin, AsyncExecution):
        limit = plugin.max_concurrency
        at_once = f"up to {limit}" if limit else "all"
        return [f"asyncio: coroutines on one event loop in this process, {at_once} at once (no batches)"]
    if isinstance(plugin, ExecutionPlugin) and hasattr(plugin, "address"):
        return _cluster_lines(plugin, tasks, adaptive, unknown_count)
    if isinstance(plugin, ExecutionPlugin):
        return [f"{type(plugin).__name__}: its executor schedules and batches the {tasks} task(s)"]
    if overrides_loop(plugin):
        return [f"{type(plugin).__name__}: its own run_experiment_loop schedules the replicates"]
    return [type(plugin).__name__]


def _cluster_lines(plugin: Any, tasks: int, adaptive: str, unknown_count: str) -> list[str]:
    """A cluster executor (``RayExecution``): where it would connect, or whether it would start one."""
    name = "ray" if type(plugin).__name__ == "RayExecution" else type(plugin).__name__
    address = getattr(plugin, "address", None)
    source = ""
    if address is None and os.environ.get(RAY_ADDRESS_ENV):
        address, source = os.environ[RAY_ADDRESS_ENV], f" (from ${RAY_ADDRESS_ENV})"
    if address in (None, "local"):
        where = "would start a private local Ray on 127.0.0.1 for this command (stopped when it ends)"
    elif address == "auto":
        where = "would join the Ray cluster already running on this machine (address 'auto')"
    else:
        where = f"would connect to the Ray cluster at {address}{source}"
    lines = [f"{name}: {where}"]
    request = [f"{getattr(plugin, 'num_cpus', 1):g} CPU"]
    if getattr(plugin, "num_gpus", 0):
        request.append(f"{plugin.num_gpus:g} GPU")
    if getattr(plugin, "memory", None):
        request.append(f"{plugin.memory} bytes of memory")
    in_flight = getattr(plugin, "max_in_flight", None)
    limit = f"at most {in_flight} tasks in flight" if in_flight else "tasks in flight follow the cluster's CPUs"
    lines.append(f"each replicate asks for {', '.join(request)}; {limit}")
    lines.append(
        _fixed_batches(getattr(plugin, "batch_size", None), tasks)
        or f"batches (one Ray task each): {adaptive}; {unknown_count}"
    )
    return lines


def _fixed_batches(size: int | None, tasks: int) -> str | None:
    if not size:
        return None
    count = -(-tasks // size) if tasks else 0
    return f"batches: {size} replicate(s) each (batch_size), {count} batch(es)"


# ---------------------------------------------------------------- data, cache, seed


def data_text(experiment: Any, plan: ExperimentPlan, treatments: Sequence[Any], *, resume: bool) -> str:
    """The run folder the run would write, and whether it is new or resumed (the store is only read)."""
    plugin = experiment.get_plugin(ArtifactPlugin)
    if plugin is None:
        return "no data store (no ArtifactPlugin): nothing would be stored"
    store = plugin.store()
    name = experiment.id
    versions = list_versions(store, name)
    repository = RunRepository(store)
    if plan.skipped:
        latest = repository.latest(name, require="record")
        where = store.uri(layout.version_dir(name, latest)) if latest is not None else display_path(store.location)
        return f"{display_path(where)}: finished and unchanged; --resume reopens it, nothing runs"
    if resume:
        latest = repository.latest(name, require="plan")
        run = repository.open(name, latest) if latest is not None else None
        if run is not None:
            where = display_path(store.uri(layout.version_dir(name, run.version)))
            if run.plan.get("mode") != "run":
                return f"{where}: an optimize record; --resume would stop there (run without --resume)"
            if getattr(experiment.get_plugin(SeedPlugin), "seed", None) is None and "root_seed" in run.plan:
                plan.seed = f"{run.plan['root_seed']} (the resumed run's)"
            changes = _changes_since(experiment, run.plan, plan, treatments)
            if changes:
                plan.to_run = plan.tasks
                return (
                    f"{where}: --resume would stop, the experiment changed since it ran ({'; '.join(changes)}); "
                    "run without --resume for a new version"
                )
            done = _recorded(run.outcomes, plan)
            plan.to_run = plan.tasks - done
            return f"{where} (resumed: {done} of {plan.tasks} task(s) recorded, {plan.to_run} to run)"
        plan.notes.append("nothing to resume: a new run")
    if not plugin.versioned:
        where = display_path(store.uri(layout.version_dir(name, 0)))
        return f"{where} (versioned=False: its records are replaced)"
    version = max(versions, default=-1) + 1
    where = display_path(store.uri(layout.version_dir(name, version)))
    existing = (
        f"; v{versions[0]}..v{versions[-1]} exist"
        if len(versions) > 1
        else (f"; v{versions[0]} exists" if versions else "")
    )
    return f"{where} (a new version{existing})"


def _changes_since(
    experiment: Any, stored: dict[str, Any], plan: ExperimentPlan, treatments: Sequence[Any]
) -> list[str]:
    """What a resume would refuse, among what is known without running step setup (the run checks the rest)."""
    from ..engine.resume import describe_work, plan_differences

    try:
        by_name = {t.name: t for t in treatments}
        conditions = {name: by_name.get(name) for name in plan.conditions}
        current = {
            **stored,
            "replicates": plan.replicates,
            **describe_work(experiment.pipeline, experiment.datasource, conditions),
        }
        return list(plan_differences(stored, current))
    except Exception:  # noqa: BLE001 - the run itself reports what it cannot compare
        return []


def _recorded(outcomes: Any, plan: ExperimentPlan) -> int:
    done = 0
    for replicate in range(plan.replicates):
        for condition in plan.conditions:
            outcome = outcomes.get(ReplicateTask(condition, replicate))
            if outcome is not None and outcome.error is None:
                done += 1
    return done


def cache_text(experiment: Any, no_cache: bool) -> str:
    """Where cacheable steps keep their results, or why nothing is cached."""
    cacheable = [step.name for step in experiment.pipeline.steps if getattr(step, "cacheable", False)]
    if not cacheable:
        return "not used (no step is cacheable)"
    if no_cache:
        return "off (--no-cache): cacheable steps run every time"
    if cache_disabled():
        return f"off (${NO_CACHE_ENV}): cacheable steps run every time"
    return f"{display_path(cache_location())} (cacheable: {', '.join(cacheable)})"


def seed_text(experiment: Any) -> str:
    plugin = experiment.get_plugin(SeedPlugin)
    seed = getattr(plugin, "seed", None)
    if seed is None:
        return "drawn when the run starts and recorded (--seed N fixes it)"
    return str(seed)


# ---------------------------------------------------------------- text


def plan_lines(plans: Sequence[ExperimentPlan], notes: Sequence[str], source: str) -> list[str]:
    """The plan as lines a person reads; nothing in it has run."""
    lines = [f"dry run of {source}: nothing runs and nothing is written"]
    for index, plan in enumerate(plans, start=1):
        lines.append("")
        title = f"{index}. {plan.name}"
        if plan.after:
            title += f" (after {', '.join(plan.after)})"
        if plan.skipped:
            title += " (skipped: already complete)"
        lines.append(title)
        lines.append(
            f"   {len(plan.conditions)} condition(s) x {plan.replicates} replicate(s) = {plan.tasks} task(s)"
            f": {', '.join(plan.conditions)}"
        )
        if plan.to_run != plan.tasks:
            lines.append(f"   to run: {plan.to_run} task(s)")
        lines.append(f"   executor: {plan.executor[0]}")
        lines.extend(f"             {line}" for line in plan.executor[1:])
        lines.append(f"   data: {plan.data}")
        lines.append(f"   step cache: {plan.cache}")
        lines.append(f"   seed: {plan.seed}")
        lines.extend(f"   {note}" for note in plan.notes)
    total = sum(plan.to_run for plan in plans)
    lines.append("")
    lines.append(f"{len(plans)} experiment(s), {total} task(s) to run")
    lines.extend(notes)
    return lines


def dry_run(args: Any, execution: Any) -> list[str]:
    """Load the target as ``crystallize run`` would, apply its options, and return the plan's lines."""
    from .targets import apply_options, load_target

    target = load_target(args.target)
    apply_options(target, execution=execution, workers=args.workers, seed=args.seed)
    plans, notes = plan_target(target, resume=args.resume, replicates=args.replicates, no_cache=args.no_cache)
    return plan_lines(plans, notes, args.target)
