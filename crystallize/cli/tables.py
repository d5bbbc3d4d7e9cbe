"""Tables of the command: a run's summary, the list of stored runs, per-condition statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..constants import BASELINE_CONDITION
from ..results import Result
from ..store import layout
from ..store.filesystem import Store
from ..store.repository import RunRecords, RunRepository
from .stats_table import hypotheses_view
from .targets import TargetError, display_path
from .trials_table import param_text, trials_table

MAX_METRIC_COLUMNS = 6


# ---------------------------------------------------------------- numbers


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "\u2014"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return fmt(value.item())
    return str(value)


def numbers(values: Iterable[Any]) -> list[float] | None:
    """The values as floats, or None when any of them is not a number."""
    out: list[float] = []
    for value in values:
        if isinstance(value, (bool, int, float)) or (
            type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0
        ):
            out.append(float(value))
        else:
            return None
    return out


@dataclass
class Summary:
    n: int
    mean: float
    std: float
    low: float
    high: float


def summarize(values: Sequence[float]) -> Summary:
    """n, mean, sample standard deviation and the 95% confidence interval of the mean (Student's t)."""
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


# ---------------------------------------------------------------- after a run


def counts(result: Result, condition: str) -> tuple[int, int, int]:
    """(replicates done, failed, planned) of a condition."""
    provenance = result.provenance
    planned = int(provenance.get("replicates") or 0)
    done = provenance.get("replicates_completed", {}).get(condition)
    failed = provenance.get("replicates_failed", {}).get(condition)
    if done is None:
        metrics = dict(result.metrics.conditions()).get(condition)
        done = len({r for reps in (metrics.replicates.values() if metrics else []) for r in reps})
    if failed is None:
        failed = len(result.replicate_errors.get(condition, {}))
    return int(done), int(failed), planned


def condition_names(result: Result) -> list[str]:
    names = [str(c) for c in result.provenance.get("conditions") or []]
    for name, _ in result.metrics.conditions():
        if name not in names and (name != BASELINE_CONDITION or _has_values(result, name)):
            names.append(name)
    return names or [BASELINE_CONDITION]


def _has_values(result: Result, condition: str) -> bool:
    metrics = dict(result.metrics.conditions()).get(condition)
    return bool(metrics and metrics.metrics)


def failed_conditions(result: Result) -> list[str]:
    """Conditions where every replicate that ran failed."""
    out = []
    for condition in condition_names(result):
        done, failed, _ = counts(result, condition)
        if done == 0 and failed > 0:
            out.append(condition)
    return out


def summary_lines(name: str, result: Result) -> list[str]:
    """One line per condition, for runs without the live display."""
    cache_hits = result.provenance.get("cache_hits", {})
    lines = []
    for condition in condition_names(result):
        done, failed, planned = counts(result, condition)
        line = f"{name} \u00b7 {condition}: {done}/{planned} done, {failed} failed"
        hits = len(cache_hits.get(condition, []))
        if hits:
            line += f", {hits} cached step hit(s)"
        lines.append(line)
    return lines


def metric_names(result: Result) -> list[str]:
    names: list[str] = []
    for _, metrics in result.metrics.conditions():
        for metric in metrics.metrics:
            if metric not in names:
                names.append(metric)
    return names


def run_summary(name: str, result: Result, location: str) -> Group:
    """The compact table printed after a run: conditions, replicates, failures, metric means; hypotheses."""
    version = result.provenance.get("version")
    title = f"{name} v{version}" if version is not None else name
    metrics = metric_names(result)
    shown = metrics[:MAX_METRIC_COLUMNS]
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("condition")
    table.add_column("done", justify="right")
    table.add_column("failed", justify="right")
    for metric in shown:
        table.add_column(f"{metric} (mean)", justify="right")
    per_condition = dict(result.metrics.conditions())
    for condition in condition_names(result):
        done, failed, planned = counts(result, condition)
        values = per_condition.get(condition)
        cells = []
        for metric in shown:
            series = numbers(values.metrics.get(metric, [])) if values else []
            cells.append(fmt(summarize(series).mean) if series is not None else "(not numeric)")
        table.add_row(
            condition,
            f"{done}/{planned}",
            Text(str(failed), style="bold red" if failed else ""),
            *cells,
        )
    parts: list[Any] = [table]
    if len(metrics) > len(shown):
        parts.append(Text(f"  {len(metrics) - len(shown)} more metric(s): crystallize show {display_path(location)}"))
    if result.metrics.hypotheses:
        parts.append(hypotheses_view(result.metrics.hypotheses))
    parts.extend(Text(f"warning: {warning}", style="yellow") for warning in result.warnings)
    parts.append(Text(f"stored in {display_path(location)}"))
    return Group(*parts)


# ---------------------------------------------------------------- show


def show_run(
    console: Console,
    result: Result,
    location: str,
    *,
    max_errors: int = 5,
    all_errors: bool = False,
    target: str | None = None,
) -> None:
    """``crystallize show``: what ran and how, metrics with intervals, hypotheses, warnings, failures.

    Failures: the first ``max_errors`` as one line each, or (``--errors``) every one with its traceback.
    """
    finished = result.provenance.get("finished", True)
    _print_run_header(console, result, location, finished=finished)
    optimization = result.provenance.get("optimization")
    if isinstance(optimization, Mapping):
        console.print(trials_table(optimization))  # the candidates with their parameters
    else:
        params = parameters_table(result)
        if params is not None:
            console.print(params)
    console.print(metrics_table(result))
    if result.metrics.hypotheses:
        console.print(hypotheses_view(result.metrics.hypotheses))
    elif not finished:
        console.print("no hypothesis results: the run did not finish (crystallize run TARGET --resume finishes it)")
    for warning in result.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    errors = [e for errs in result.replicate_errors.values() for _, e in sorted(errs.items())]
    if not errors:
        return
    console.print(Text(f"{len(errors)} failed replicate(s):", style="bold red"))
    if all_errors:
        for error in errors:
            console.print(Text(f"\n{error}", style="red"), markup=False, highlight=False)
            traceback = (error.traceback or "").rstrip()
            console.print(traceback or "  (no traceback was recorded)", markup=False, highlight=False)
        return
    for error in errors[:max_errors]:
        console.print(f"  {error}", markup=False, highlight=False)
    more = f"... and {len(errors) - max_errors} more; " if len(errors) > max_errors else ""
    console.print(f"  {more}crystallize show {target or location} --errors lists each with its traceback")


def _print_run_header(console: Console, result: Result, location: str, *, finished: bool) -> None:
    provenance = result.provenance
    damaged = [str(d) for d in provenance.get("damaged") or []]
    if damaged:
        status = Text("damaged" if finished else "interrupted, damaged", style="bold red")
    else:
        status = Text("finished", style="green") if finished else Text("interrupted", style="yellow")
    title = f"{provenance.get('experiment', '?')} v{provenance.get('version')}"
    console.print(Text.assemble((title, "bold"), "  ", status, f"  {display_path(location)}"))
    for item in damaged:
        console.print(Text(f"damaged: {item}", style="red"))
    facts = []
    if provenance.get("started_at"):
        facts.append(f"started {_local_time(provenance['started_at'])}")
    executor = _executor_text(provenance.get("executor"))
    if executor:
        facts.append(f"executor {executor}")
    if provenance.get("root_seed") is not None:
        facts.append(f"seed {provenance['root_seed']}")
    facts.append(f"{provenance.get('replicates', '?')} replicate(s) x {len(condition_names(result))} condition(s)")
    if provenance.get("wall_seconds") is not None:
        facts.append(f"{provenance['wall_seconds']:.2f} s")
    console.print(", ".join(facts))
    for line in provenance_lines(provenance):
        console.print(line, markup=False, highlight=False)


def provenance_lines(provenance: Mapping[str, Any]) -> list[str]:
    """Where the run came from: code (git commit, dirty), cluster, seed stream, versions, host."""
    lines = []
    git = provenance.get("git")
    if isinstance(git, Mapping):
        if git.get("commit"):
            state = git.get("dirty")
            dirty = " (dirty: uncommitted changes)" if state is True else " (clean)" if state is False else ""
            lines.append(f"code: git {str(git['commit'])[:12]}{dirty} in {git.get('root')}")
        elif git.get("root"):
            lines.append(f"code: git repository {git['root']} without commits")
        else:
            lines.append("code: not in a git repository")
    where = []
    executor = provenance.get("executor")
    if isinstance(executor, Mapping) and (executor.get("nodes") is not None or executor.get("cpus") is not None):
        size = [f"{executor['nodes']} node(s)"] if executor.get("nodes") is not None else []
        size += [f"{fmt(executor['cpus'])} CPU(s)"] if executor.get("cpus") is not None else []
        where.append(" and ".join(size))
    host = provenance.get("host")
    if isinstance(host, Mapping):
        where.append(f"host {host.get('hostname', '?')} ({host.get('platform', '?')})")
    if provenance.get("seed_stream"):
        where.append(f"seed stream {provenance['seed_stream']}")
    if where:
        lines.append("ran on: " + ", ".join(where))
    versions = provenance.get("versions")
    if isinstance(versions, Mapping):
        shown = [f"{name} {version}" for name, version in versions.items() if version is not None]
        lines.append("versions: " + ", ".join(shown))
    return lines


def parameters_table(result: Result) -> Table | None:
    """Each treatment's parameters (one column per key), or None when no treatment sets a key."""
    from ..provenance import treatment_functions, treatment_params

    params = treatment_params(result.provenance)
    keys = list(dict.fromkeys(k for values in params.values() for k in values))
    callables = treatment_functions(result.provenance)
    if not keys and not callables:
        return None
    table = Table(title="treatments", title_justify="left", title_style="bold")
    table.add_column("condition")
    for key in keys:
        table.add_column(key, justify="right")
    if callables:
        table.add_column("function")
    for name in [n for n in condition_names(result) if n in params or n in callables]:
        values = params.get(name, {})
        cells = [param_text(values[k]) if k in values else "\u2014" for k in keys]
        if callables:
            cells.append(callables.get(name, ""))
        table.add_row(name, *cells)
    return table


_METRIC_COLUMNS = (
    ("condition", "left"),
    ("metric", "left"),
    ("n", "right"),
    ("mean", "right"),
    ("std", "right"),
    ("95% CI of the mean", "right"),
    ("failed", "right"),
)


def metrics_table(result: Result) -> Table:
    """One row per (condition, metric): n, mean, std and a 95% interval of the mean."""
    table = Table(title="metrics", title_justify="left", title_style="bold")
    for column, justify in _METRIC_COLUMNS:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    per_condition = dict(result.metrics.conditions())
    for condition in condition_names(result):
        _, failed, planned = counts(result, condition)
        values = per_condition.get(condition)
        metrics = values.metrics if values is not None else {}
        failed_cell = Text(f"{failed}/{planned}", style="bold red" if failed else "")
        if not metrics:
            table.add_row(condition, "\u2014", "0", "", "", "", failed_cell)
        for index, (metric, series) in enumerate(metrics.items()):
            first = index == 0
            table.add_row(
                condition if first else "",
                metric,
                *_summary_cells(series),
                failed_cell if first else "",
                end_section=index == len(metrics) - 1,
            )
    return table


def _summary_cells(series: list[Any]) -> list[str]:
    values = numbers(series)
    if values is None:
        return [str(len(series)), "(not numeric)", "", ""]
    s = summarize(values)
    ci = f"[{fmt(s.low)}, {fmt(s.high)}]" if s.n > 1 else "\u2014"
    return [str(s.n), fmt(s.mean), fmt(s.std), ci]


def _executor_text(executor: Any) -> str:
    if not isinstance(executor, Mapping):
        return str(executor) if executor else ""
    name = str(executor.get("executor", "?"))
    parallelism = executor.get("parallelism")
    return f"{name} x{parallelism}" if parallelism and parallelism != 1 else name


def _local_time(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- stored runs


@dataclass
class StoredRun:
    experiment: str
    version: int
    date: str
    replicates: int | None
    conditions: int
    executor: str
    status: str
    done: int
    failed: int
    mode: str
    damage: tuple[str, ...] = ()


def list_runs(store: Store, experiment: str | None = None) -> list[StoredRun]:
    """Every run with a plan under the store (abandoned claims without one are left out)."""
    repository = RunRepository(store)
    try:
        runs = repository.runs(experiment or None)
    except ValueError:  # not a name an experiment can have: not ours
        return []
    return [_stored_run(repository, run) for run in runs]


def _stored_run(repository: RunRepository, run: RunRecords) -> StoredRun:
    """One row of ``crystallize runs``; a damaged run counts only the outcomes that can still be read."""
    experiment, version, plan, record = run.experiment, run.version, run.plan, run.record
    damage = run.damage
    replicates = plan.get("replicates")
    conditions = list(plan.get("conditions") or [])
    mode = str(plan.get("mode", "run"))
    if record is not None and not damage:
        provenance = record.get("provenance", {})
        date = _local_time(provenance.get("started_at", ""))
        executor = _executor_text(provenance.get("executor"))
        done = sum(int(v) for v in provenance.get("replicates_completed", {}).values())
        failed = sum(int(v) for v in provenance.get("replicates_failed", {}).values())
        conditions = list(provenance.get("conditions") or conditions)
        status = "finished"
    else:
        provenance = record.get("provenance", {}) if record is not None else {}
        started = provenance.get("started_at") or repository.planned_at(experiment, version)
        date = _local_time(started) if started else "\u2014"
        executor = _executor_text(provenance.get("executor")) or "\u2014"
        conditions = list(provenance.get("conditions") or conditions)
        if replicates is None:
            replicates = provenance.get("replicates")
        mode = str(provenance.get("mode", mode))
        outcomes = run.outcomes.values()
        done = sum(1 for o in outcomes if o.error is None)
        failed = sum(1 for o in outcomes if o.error is not None)
        status = "damaged" if damage else "interrupted"
    return StoredRun(
        experiment=experiment,
        version=version,
        date=date,
        replicates=int(replicates) if replicates is not None else None,
        conditions=len(conditions),
        executor=executor,
        status=status,
        done=done,
        failed=failed,
        mode=mode,
        damage=tuple(str(d) for d in damage),
    )


def runs_table(runs: Sequence[StoredRun], location: str) -> Group:
    """The runs, then one line per damaged file of a damaged run."""
    table = Table(title=f"runs in {display_path(location)}", title_justify="left", title_style="bold")
    for column, justify in (
        ("experiment", "left"),
        ("version", "left"),
        ("date", "left"),
        ("replicates", "right"),
        ("conditions", "right"),
        ("executor", "left"),
        ("status", "left"),
        ("done", "right"),
        ("failed", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        style = {"finished": "green", "damaged": "bold red"}.get(run.status, "yellow")
        status = Text(run.status, style=style)
        if run.damage:
            files = [item.split(" ", 1)[0] for item in run.damage]
            status.append(f": {', '.join(files[:2])}" + (f" +{len(files) - 2}" if len(files) > 2 else ""))
        if run.mode != "run":
            status.append(f" ({run.mode})")
        planned = run.replicates * run.conditions if run.replicates is not None and run.mode == "run" else None
        table.add_row(
            run.experiment,
            f"v{run.version}",
            run.date,
            str(run.replicates) if run.replicates is not None else "?",
            str(run.conditions),
            run.executor,
            status,
            f"{run.done}/{planned}" if planned is not None else str(run.done),
            Text(str(run.failed), style="bold red" if run.failed else ""),
        )
    notes = [Text(f"{run.experiment} v{run.version}: {item}", style="red") for run in runs for item in run.damage]
    return Group(table, *notes)


def locate_run(run: str, data: str | None) -> str:
    """A run folder, an experiment folder, or ``name`` / ``name/vN`` under the data store, as a location."""
    import os

    from ..store.locations import data_location

    if "://" not in run and os.path.isdir(run):
        folder = run.rstrip("/") or run
        if os.path.isfile(os.path.join(folder, layout.PLAN)):
            return os.path.abspath(folder)
        store = Store(os.path.abspath(os.path.dirname(os.path.abspath(folder))))
        latest = _latest_with_plan(store, os.path.basename(os.path.abspath(folder)))
        if latest is not None:
            return store.uri(layout.version_dir(os.path.basename(os.path.abspath(folder)), latest))
        raise TargetError(f"{run} is neither a run folder (no {layout.PLAN}) nor an experiment folder with runs")
    if "://" in run:
        return run
    root = data_location(data)
    store = Store(root)
    parts = run.strip("/").split("/")
    if len(parts) == 2 and layout.parse_version(parts[1]) is not None:
        experiment, version = parts[0], layout.parse_version(parts[1])
        try:
            found = store.exists(layout.run_file(experiment, version, layout.PLAN))  # type: ignore[arg-type]
        except ValueError:
            found = False
        if found:
            return store.uri(layout.version_dir(experiment, version))  # type: ignore[arg-type]
    elif len(parts) == 1:
        try:
            latest = _latest_with_plan(store, parts[0])
        except ValueError:
            latest = None
        if latest is not None:
            return store.uri(layout.version_dir(parts[0], latest))
    raise TargetError(f"no run '{run}': not a run folder, and no runs of an experiment '{run}' in {display_path(root)}")


def _latest_with_plan(store: Store, experiment: str) -> int | None:
    return RunRepository(store).latest(experiment, require="plan")
