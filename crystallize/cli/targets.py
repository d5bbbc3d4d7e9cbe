"""What ``crystallize run`` runs: a Python file, a folder with ``config.yaml``, or a folder of them (a graph)."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TargetError as TargetError  # defined with the other errors; importable from here too

if TYPE_CHECKING:
    from ..plugins.execution import ExecutionPlugin

CONFIG_FILE = "config.yaml"


@dataclass
class Target:
    """A loaded target: ``kind`` is ``"experiment"`` or ``"graph"``."""

    kind: str
    obj: Any
    source: str

    def experiments(self) -> list[Any]:
        return [self.obj] if self.kind == "experiment" else graph_experiments(self.obj)


def load_target(path: str) -> Target:
    """Load ``path`` as an experiment or a graph; raise :class:`TargetError` saying why it cannot."""
    target = Path(path)
    if not target.exists():
        raise TargetError(f"no such file or folder: {path}")
    if target.is_dir():
        return _load_folder(target)
    if target.suffix in (".yaml", ".yml"):
        return _load_yaml_experiment(target.parent, config=target)
    if target.suffix != ".py":
        raise TargetError(f"{path}: expected a Python file (.py), a config.yaml, or a folder with config.yaml")
    return _load_python(target)


# ---------------------------------------------------------------- Python files


def _load_python(path: Path) -> Target:
    namespace = _run_file(path)
    from crystallize import Experiment

    graph_class = _graph_class()
    graphs = {n: v for n, v in namespace.items() if _is_graph(v, graph_class) and not n.startswith("__")}
    if graphs:
        return Target("graph", _pick(graphs, "graph", "ExperimentGraph", path), str(path))
    experiments = {n: v for n, v in namespace.items() if isinstance(v, Experiment) and not n.startswith("__")}
    if not experiments:
        raise TargetError(
            f"{path} defines no Experiment or ExperimentGraph at module level "
            '(one built inside a function or an `if __name__ == "__main__":` block is not seen); '
            "assign it to a module-level variable, e.g. `experiment = Experiment.builder(...)...build()`"
        )
    return Target("experiment", _pick(experiments, "experiment", "Experiment", path), str(path))


def _run_file(path: Path) -> dict[str, Any]:
    """Execute the file as a module named ``crystallize_target`` (its ``__main__`` block does not run)."""
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # as `python file.py` would: sibling modules import
    argv = sys.argv
    sys.argv = [str(path)]
    try:
        return runpy.run_path(str(path), run_name="crystallize_target")
    except SystemExit as exc:
        raise TargetError(f"{path} exited while being loaded (SystemExit: {exc.code})") from exc
    except SyntaxError as exc:
        raise TargetError(f"{path}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise TargetError(f"{path} raised while being loaded: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.argv = argv


def _pick(found: Mapping[str, Any], preferred: str, kind: str, path: Path) -> Any:
    if preferred in found:
        return found[preferred]
    unique = {id(v): v for v in found.values()}
    if len(unique) == 1:
        return next(iter(unique.values()))
    names = ", ".join(f"{name} ({_label(value)})" for name, value in found.items())
    raise TargetError(
        f"{path} defines several {kind} objects: {names}; name the one to run `{preferred}` (or keep only one)"
    )


def _label(value: Any) -> str:
    return str(getattr(value, "id", None) or getattr(value, "name", None) or type(value).__name__)


def _graph_class() -> type | None:
    try:
        from crystallize.graph import ExperimentGraph
    except ImportError:
        return None
    return ExperimentGraph


def _is_graph(value: Any, graph_class: type | None) -> bool:
    if isinstance(value, type):
        return False
    if graph_class is not None:
        return isinstance(value, graph_class)
    return type(value).__name__ == "ExperimentGraph"


# ---------------------------------------------------------------- YAML folders


def _load_folder(folder: Path) -> Target:
    if (folder / CONFIG_FILE).is_file():
        return _load_yaml_experiment(folder, config=folder / CONFIG_FILE)
    children = sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).is_file())
    if not children:
        raise TargetError(
            f"{folder} has no {CONFIG_FILE} and no subfolders with one; "
            "give a Python file, an experiment folder, or a folder of experiment folders"
        )
    try:
        from crystallize.graph import ExperimentGraph
    except ImportError as exc:
        raise TargetError(f"cannot load experiment graphs: {exc}") from exc
    try:
        graph = ExperimentGraph.from_yaml(str(folder))
    except Exception as exc:
        raise TargetError(f"{folder}: cannot build the experiment graph: {type(exc).__name__}: {exc}") from exc
    return Target("graph", graph, str(folder))


def _load_yaml_experiment(folder: Path, *, config: Path) -> Target:
    try:
        from crystallize.config import load_experiment
    except ImportError as exc:
        raise TargetError(f"cannot load YAML experiments: {exc}") from exc
    try:
        experiment = load_experiment(str(config))
    except Exception as exc:
        raise TargetError(f"{config}: cannot build the experiment: {type(exc).__name__}: {exc}") from exc
    return Target("experiment", experiment, str(folder))


# ---------------------------------------------------------------- graphs


def graph_experiments(graph: object) -> list[Any]:
    """The experiments of a graph (``ExperimentGraph.experiments``: name -> experiment)."""
    experiments = getattr(graph, "experiments", None)
    if callable(experiments):
        experiments = experiments()
    if isinstance(experiments, Mapping):
        return list(experiments.values())
    return list(experiments or [])


# ---------------------------------------------------------------- options


def execution_factory(
    executor: str | None, workers: int | None, address: str | None
) -> Callable[[], ExecutionPlugin] | None:
    """A factory of the execution plugin ``--executor`` asks for (None: keep the experiment's).

    The executors and the options each accepts come from the registry
    (:mod:`crystallize.execution.registry`), so a newly registered executor needs no change here.
    """
    from crystallize.execution import registry

    if executor is None:
        if address is not None:
            raise _option_error("address", registry.accepting("address"))
        return None
    try:
        entry = registry.get(executor)
    except registry.UnknownExecutorError as exc:
        raise TargetError(str(exc)) from exc
    for option, value in (("address", address), ("workers", workers)):
        if value is not None and option not in entry.accepts:
            raise _option_error(option, registry.accepting(option))
    reason = entry.unavailable_reason()
    if reason is not None:
        raise TargetError(f"--executor {executor} {reason}")
    return lambda: entry.create(workers=workers, address=address)


def _option_error(option: str, accepting: list[str]) -> TargetError:
    """``--workers only applies to --executor thread or process``, from the executors that accept it."""
    if not accepting:
        return TargetError(f"--{option}: no registered executor takes it")
    names = accepting[0] if len(accepting) == 1 else f"{', '.join(accepting[:-1])} or {accepting[-1]}"
    return TargetError(f"--{option} only applies to --executor {names}")


def apply_options(
    target: Target, *, execution: Callable[[], ExecutionPlugin] | None, workers: int | None, seed: int | None
) -> None:
    """Replace every experiment's execution plugin and set its seed, as the command line says."""
    from crystallize import SeedPlugin
    from crystallize.plugins.execution import ExecutionPlugin, overrides_loop

    experiments = target.experiments()
    if not experiments and (execution is not None or workers is not None or seed is not None):
        raise TargetError(f"{target.source}: found no experiments in the graph to apply the options to")
    for experiment in experiments:
        if execution is not None:
            plugin = execution()
            kept = [p for p in experiment.plugins if not (isinstance(p, ExecutionPlugin) or overrides_loop(p))]
            experiment.plugins = [*kept, plugin]
            plugin.init_hook(experiment)
        elif workers is not None:
            current = experiment.execution_plugin()
            if not hasattr(current, "max_workers"):
                raise TargetError(
                    f"--workers: experiment '{experiment.id}' runs on {type(current).__name__}, which has no "
                    "workers; add --executor thread or --executor process"
                )
            current.max_workers = workers
        if seed is not None:
            experiment.get_plugin(SeedPlugin).seed = seed


def display_path(location: str) -> str:
    """A run location as a person would type it: relative to the working folder when inside it."""
    if "://" in location:
        return location
    try:
        relative = os.path.relpath(location)
    except ValueError:
        return location
    return location if relative.startswith("..") else relative
