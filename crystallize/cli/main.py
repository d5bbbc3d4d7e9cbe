"""The ``crystallize`` command: ``run``, ``runs``, ``show``, ``export``.

Exit codes: 0 done; 1 a condition failed in every replicate (or the run itself broke);
2 the command line or the target is wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console

from .._version import __version__
from ..cli_hints import command_line
from ..execution import registry
from .targets import TargetError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are non-negative integers, got {value}")
    return value


def _add_run_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """``crystallize run``: its options come from the executor registry."""
    run = sub.add_parser(
        "run",
        parents=[common],
        help="run an experiment or an experiment graph",
        description=(
            "Run TARGET: a Python file with a module-level Experiment or ExperimentGraph (its "
            "`if __name__ == '__main__':` block does not run), a folder with config.yaml (one "
            "experiment), or a folder whose subfolders have config.yaml (a graph)."
        ),
    )
    run.add_argument("target", metavar="TARGET", help="a .py file, an experiment folder, or a folder of them")
    executors = registry.registered()
    run.add_argument(
        "--executor",
        choices=list(executors),
        help="where replicates run (replaces the experiment's execution plugin): "
        + "; ".join(f"{name}: {entry.description}" for name, entry in executors.items()),
    )
    run.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help=f"how many threads or processes ({'/'.join(registry.accepting('workers'))} executors)",
    )
    run.add_argument(
        "--address",
        metavar="ADDR",
        help=f"cluster address for --executor {'/'.join(registry.accepting('address'))} (Ray: 'auto', 'ray://host:10001')",
    )
    run.add_argument("--replicates", type=_positive, metavar="N", help="replicates per condition")
    run.add_argument("--resume", action="store_true", help="continue the latest run: only missing or failed replicates")
    run.add_argument("--no-cache", action="store_true", help="ignore the step cache (CRYSTALLIZE_NO_CACHE=1)")
    run.add_argument(
        "--seed",
        type=_seed,
        metavar="N",
        help="root seed: the same seed gives the same metrics on every executor (steps that draw from the "
        "global random/numpy.random under --executor thread with several workers excepted: use ctx.rng)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no live display; warnings only")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would run (experiments in order, conditions x replicates, tasks, batching, the "
        "executor, where data and caches go) without running anything or writing to the store",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="debug logging; tracebacks for every error")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data", metavar="DIR", help="data store: a folder or URI (default: $CRYSTALLIZE_DATA_URI, else ./data)"
    )

    parser = argparse.ArgumentParser(
        prog="crystallize",
        description="Run reproducible experiments and look at their stored runs.",
        epilog="Exit codes: 0 ok; 1 a condition failed in every replicate; 2 usage or target error.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_run_command(sub, common)

    runs = sub.add_parser("runs", parents=[common, data], help="list stored runs")
    runs.add_argument("experiment", nargs="?", metavar="EXPERIMENT", help="only this experiment's runs")

    show = sub.add_parser("show", parents=[common, data], help="summarize a stored run")
    show.add_argument("run", metavar="RUN", help="a run folder (data/basic/v0) or an experiment name (its latest run)")
    show.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw each metric per condition (distribution, mean and 95%% CI, n, adjusted p, effect size; "
        "an optimize run: the objective against each parameter)",
    )
    show.add_argument("--errors", action="store_true", help="list every failed replicate with its traceback")

    export = sub.add_parser("export", parents=[common, data], help="write a run's metrics (long form)")
    export.add_argument(
        "run", metavar="RUN", help="a run folder (data/basic/v0) or an experiment name (its latest run)"
    )
    export.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="file format")
    export.add_argument(
        "--output", "-o", metavar="PATH", help="where to write ('-': standard output; default <exp>_v<N>_metrics.<fmt>)"
    )
    export.add_argument(
        "--mlflow",
        metavar="URI",
        help="log each condition as an MLflow run to this tracking store instead (sqlite:///mlflow.db, "
        "http://127.0.0.1:5000); a file too only with --output. Needs: pip install 'crystallize-ray[mlflow]'",
    )
    export.add_argument(
        "--mlflow-experiment", metavar="NAME", help="MLflow experiment to log into (default: the experiment's name)"
    )
    return parser


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # files and pipes: no wrapping at 80 columns
        console = Console(stderr=stderr, highlight=False, width=160)
    return console


def _say(console: Console, text: str) -> None:
    """A plain line: no markup, no highlighting, no hard wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out, err = _console(stderr=False), _console(stderr=True)
    commands = {"run": _cmd_run, "runs": _cmd_runs, "show": _cmd_show, "export": _cmd_export}
    try:
        with command_line():  # the library's advice names options (--resume), not Python arguments
            return commands[args.command](args, out, err)
    except TargetError as exc:
        if args.debug:
            _say(err, traceback.format_exc())
        _say(err, f"crystallize {args.command}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; the same command with --resume goes on" if args.command == "run" else ""
        _say(err, f"interrupted; finished replicates are recorded{hint}")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the command reports every error as one line and an exit code
        from ..errors import ValidationError

        if args.debug:
            _say(err, traceback.format_exc())
        if isinstance(exc, ValidationError):  # the experiment as written cannot run: say what to change
            _say(err, f"crystallize {args.command}: error: {exc}")
            return EXIT_USAGE
        hint = "" if args.debug else " (--debug shows the traceback)"
        _say(err, f"crystallize {args.command}: error: {type(exc).__name__}: {exc}{hint}")
        return EXIT_FAILED


# ---------------------------------------------------------------- run


def _cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ..engine.progress import set_progress_factory
    from ..store.locations import NO_CACHE_ENV
    from .live import LiveDisplay, command_logging
    from .tables import failed_conditions, run_summary, summary_lines
    from .targets import apply_options, execution_factory, load_target

    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    live = not args.quiet and err.is_interactive
    with command_logging(err, level, debug=args.debug), _quiet_backends(args.quiet):
        execution = execution_factory(args.executor, args.workers, args.address)
        if args.dry_run:
            from .dry_run import dry_run

            for line in dry_run(args, execution):
                _say(out, line)
            return EXIT_OK
        if args.no_cache:
            os.environ[NO_CACHE_ENV] = "1"
        target = load_target(args.target)
        apply_options(target, execution=execution, workers=args.workers, seed=args.seed)
        display = LiveDisplay(err, live)
        previous = set_progress_factory(display.reporter)
        try:
            with display:
                results = _execute(target, strategy="resume" if args.resume else None, replicates=args.replicates)
        finally:
            set_progress_factory(previous)

    if not live:
        for name, result in results.items():
            for line in summary_lines(name, result):
                _say(err, line)
    locations = _locations(target, results)
    for name, result in results.items():
        out.print(run_summary(name, result, locations[name]))
    code = EXIT_OK
    for name, result in results.items():
        for condition in failed_conditions(result):
            first = min(result.replicate_errors.get(condition, {}).items(), default=(None, None))[1]
            reason = f": {first.exception_type}: {first.message}" if first is not None else ""
            _say(err, f"{name}: condition '{condition}' failed in every replicate{reason}")
            code = EXIT_FAILED
    return code


QUIET_ENV = "CRYSTALLIZE_QUIET"  # read by executor plugins (crystallize_ray): keep your own notices to yourself


@contextlib.contextmanager
def _quiet_backends(quiet: bool) -> Iterator[None]:
    """Under ``--quiet``, executor back-ends (Ray's start-up and raylet lines) are silent too."""
    previous = os.environ.get(QUIET_ENV)
    if quiet:
        os.environ[QUIET_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(QUIET_ENV, None)
        else:
            os.environ[QUIET_ENV] = previous


def _execute(target: Any, *, strategy: str | None, replicates: int | None) -> dict[str, Any]:
    if target.kind == "experiment":
        result = target.obj.run(strategy=strategy, replicates=replicates)
        return {target.obj.id: result}
    kwargs: dict[str, Any] = {}
    if strategy is not None:
        kwargs["strategy"] = strategy
    if replicates is not None:
        kwargs["replicates"] = replicates
    results = target.obj.run(**kwargs)
    return {str(name): result for name, result in dict(results).items()}


def _locations(target: Any, results: dict[str, Any]) -> dict[str, str]:
    """Where each result's run is stored (its experiment's artifact plugin knows; else the default store)."""
    from ..plugins.artifacts import ArtifactPlugin
    from ..store import layout
    from ..store.filesystem import Store
    from ..store.locations import data_location

    by_id = {}
    for experiment in target.experiments():
        by_id[experiment.id] = experiment
        by_id.setdefault(getattr(experiment, "name", None) or experiment.id, experiment)
    locations = {}
    for name, result in results.items():
        experiment_id = str(result.provenance.get("experiment") or name)
        version = result.provenance.get("version")
        experiment = by_id.get(experiment_id) or by_id.get(name)
        plugin = experiment.get_plugin(ArtifactPlugin) if experiment is not None else None
        if plugin is not None and plugin.run_dir is not None and plugin.version == version:
            locations[name] = plugin.run_dir
        elif version is not None:
            store = plugin.store() if plugin is not None else Store(data_location())
            locations[name] = store.uri(layout.version_dir(experiment_id, int(version)))
        else:
            locations[name] = "?"
    return locations


# ---------------------------------------------------------------- runs, show, export


def _cmd_runs(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ..store.filesystem import Store
    from ..store.locations import data_location
    from .tables import list_runs, runs_table
    from .targets import display_path

    location = data_location(args.data)
    runs = list_runs(Store(location), args.experiment)
    if not runs:
        what = f"of '{args.experiment}' " if args.experiment else ""
        if args.experiment:
            raise TargetError(f"no runs {what}in {display_path(location)}")
        _say(err, f"no runs in {display_path(location)}")
        return EXIT_OK
    out.print(runs_table(runs, location))
    return EXIT_OK


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    from ..runs import load_run
    from .tables import locate_run

    location = locate_run(args.run, args.data)
    try:
        return load_run(location), location
    except FileNotFoundError as exc:
        raise TargetError(str(exc)) from exc


def _cmd_show(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .tables import show_run

    result, location = _load(args)
    show_run(out, result, location, all_errors=args.errors, target=args.run)
    if args.plot:
        from .plot import plot_run

        path = plot_run(result, args.plot)
        _say(err, f"plot written to {path}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .export import default_output, export_run

    result, location = _load(args)
    if args.mlflow_experiment and not args.mlflow:
        raise TargetError("--mlflow-experiment goes with --mlflow URI")
    if args.mlflow:
        from .mlflow_export import export_to_mlflow, summary_lines

        logged = export_to_mlflow(result, args.mlflow, experiment_name=args.mlflow_experiment, location=location)
        for line in summary_lines(logged):
            _say(err, line)
        if not args.output:
            return EXIT_OK
    output = args.output or default_output(result, args.format)
    where, rows = export_run(result, args.format, output)
    _say(err, f"wrote {rows} row(s) of metrics to {where}")
    return EXIT_OK
