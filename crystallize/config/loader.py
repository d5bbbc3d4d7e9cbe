"""Loading experiments from their folders: the entry points of :mod:`crystallize.config`.

The experiment is made by an :class:`~crystallize.builder.ExperimentBuilder` given the
class to build (``Experiment.from_yaml`` passes its own), so this package never imports
:mod:`crystallize.experiment`, which imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..builder import ExperimentBuilder
from ..errors import ValidationError
from .build import (
    build_datasource,
    build_outputs,
    build_steps,
    build_treatments,
    check_datasource_shape,
    check_steps_shape,
)
from .build_hypotheses import build_hypotheses
from .format027 import FILES, Reference, build_027, check_027_keys, detect
from .namespace import Namespace
from .references import link_references, missing_producer, producer_config
from .yaml_source import YamlSource, did_you_mean

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..plugins.base import BasePlugin

__all__ = ["CONFIG_FILE", "load_experiment", "load_experiment_folder", "load_experiment_graph"]

CONFIG_FILE = "config.yaml"

TOP_KEYS = (
    "name",
    "description",
    "replicates",
    "datasource",
    "steps",
    "treatments",
    "hypotheses",
    "initial_ctx",
    "outputs",
)
REQUIRED_TOP_KEYS = ("datasource", "steps")


def load_experiment(
    path: str | os.PathLike[str],
    plugins: Sequence[BasePlugin] | None = None,
    *,
    experiment_class: type[Experiment] | None = None,
) -> Experiment:
    """The experiment configured by ``path``: a folder holding ``config.yaml``, or the YAML file itself.

    ``plugins`` (execution, seed, ...) are passed to the experiment as they are; the
    config does not choose them. ``experiment_class`` is the class to build (default:
    the builder's, ``Experiment``). A config in the 0.27 format that reads another
    experiment's output (``"producer#output"``) loads that experiment too, to link its output.
    """
    return _Loading(experiment_class).load(_locate(Path(path)), plugins)


def load_experiment_graph(
    path: str | os.PathLike[str], *, experiment_class: type[Experiment] | None = None
) -> list[Experiment]:
    """The experiment of ``path`` (a config file or its folder) and every experiment it reads from,
    found by name as sibling folders (or under the experiments root, as 0.27 finds them), producers first."""
    loading = _Loading(experiment_class)
    loading.load(_locate(Path(path)), None, producers=True)
    return loading.experiments()


def load_experiment_folder(
    path: str | os.PathLike[str], *, experiment_class: type[Experiment] | None = None
) -> list[Experiment]:
    """The experiments of every immediate subfolder of ``path`` that has a ``config.yaml``, sorted by folder name.

    Experiment names must be unique, and an artifact datasource must name one of these
    experiments as its producer. A folder that has no such subfolder but a
    ``config.yaml`` of its own gives that one experiment.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValidationError(f"{folder}: not a folder; expected a folder whose subfolders each hold a {CONFIG_FILE}")
    children = sorted((p for p in folder.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file()), key=lambda p: p.name)
    if not children:
        if (folder / CONFIG_FILE).is_file():
            return [load_experiment(folder, experiment_class=experiment_class)]
        raise ValidationError(
            f"{folder}: no subfolder has a {CONFIG_FILE}; expected one folder per experiment, each with a {CONFIG_FILE}"
        )
    loading = _Loading(experiment_class)
    loaded = [loading.load_one(child / CONFIG_FILE, None) for child in children]
    by_name: dict[str, YamlSource] = {}
    for experiment, config in loaded:
        other = by_name.get(experiment.id)
        if other is not None:
            raise config.error(
                "name",
                f"experiment name '{experiment.id}' is also used by {other.file}; "
                "names must be unique within a folder of experiments",
            )
        by_name[experiment.id] = config
    for _, config in loaded:
        producer = config.artifact_producer
        if producer is not None and producer not in by_name:
            raise config.error(
                "datasource.artifact.experiment",
                f"no experiment named '{producer}' in {folder}{did_you_mean(producer, by_name)}; "
                f"expected one of: {', '.join(sorted(by_name))}",
            )
    for experiment, config in loaded:  # 0.27 references name experiments of this folder
        references = loading.references.get(config.file.resolve(), [])
        for reference in references:
            if reference.producer not in by_name:
                raise missing_producer(config, reference.path, reference.producer)
        named = {e.id: e for e, _ in loaded}
        link_references(experiment, config, references, named)
    return [experiment for experiment, _ in loaded]


class _Loading:
    """One load: configs read once each (by resolved path), with the producers their references name."""

    def __init__(self, experiment_class: type[Experiment] | None) -> None:
        self.experiment_class = experiment_class
        self.loaded: dict[Path, tuple[Experiment, YamlSource]] = {}
        self.references: dict[Path, list[Reference]] = {}
        self.order: list[Path] = []  # producers before their consumers

    def experiments(self) -> list[Experiment]:
        return [self.loaded[file][0] for file in self.order]

    def load(self, config_file: Path, plugins: Sequence[BasePlugin] | None, *, producers: bool = False) -> Experiment:
        """The experiment of ``config_file``; its 0.27 references (and with ``producers`` every producer it
        names) loaded and linked."""
        return self._load(config_file.resolve(), plugins, producers, ())

    def _load(
        self, config_file: Path, plugins: Sequence[BasePlugin] | None, producers: bool, active: tuple[Path, ...]
    ) -> Experiment:
        if config_file in self.loaded:
            return self.loaded[config_file][0]
        experiment, config = self.load_one(config_file, plugins)
        references = self.references.get(config_file, [])
        names = [(r.producer, r.path) for r in references]
        if producers and config.artifact_producer is not None:
            names.append((config.artifact_producer, "datasource.artifact.experiment"))
        found: dict[str, Experiment] = {}
        for name, path in names:
            file = producer_config(config_file, name)
            if file is None:
                raise missing_producer(config, path, name)
            file = file.resolve()
            if file in active or file == config_file:  # still loading: a cycle, which the graph reports
                found[name] = self.loaded[file][0]
                continue
            found[name] = self._load(file, None, producers, (*active, config_file))
        link_references(experiment, config, references, found)
        self.order.append(config_file)
        return experiment

    def load_one(self, config_file: Path, plugins: Sequence[BasePlugin] | None) -> tuple[Experiment, YamlSource]:
        """The experiment of one config, its references unlinked (cached by path)."""
        key = config_file.resolve()
        if key not in self.loaded:
            config = YamlSource.read(config_file)
            reason = detect(config.data)
            if reason is None:
                experiment = _load_ours(config, plugins, self.experiment_class)
            else:
                experiment, references = _load_027(config, reason, plugins, self.experiment_class)
                self.references[key] = references
            self.loaded[key] = (experiment, config)
        return self.loaded[key]


def _load_ours(
    config: YamlSource, plugins: Sequence[BasePlugin] | None, experiment_class: type[Experiment] | None
) -> Experiment:
    """The experiment of a config in our format."""
    data = config.data
    config.check_keys(data, "", TOP_KEYS, REQUIRED_TOP_KEYS)
    folder = config.file.parent
    name, description, replicates, initial_ctx = _header(config, folder)

    # The structure is checked before any module is imported; then the names are resolved.
    check_datasource_shape(config, data["datasource"])
    check_steps_shape(config, data["steps"])
    namespace = Namespace.import_folder(folder, config)

    datasource = build_datasource(config, namespace, data["datasource"])
    steps = build_steps(config, namespace, data["steps"])
    treatments = build_treatments(config, namespace, data.get("treatments"))
    hypotheses = build_hypotheses(config, namespace, data.get("hypotheses"))
    if hypotheses and not treatments:
        raise config.error(
            "hypotheses",
            "hypotheses compare treatments with the baseline; expected at least one entry under 'treatments'",
        )
    outputs = build_outputs(config, namespace, data.get("outputs"), name)
    builder = _builder(name, description, replicates, initial_ctx, plugins, experiment_class)
    builder.datasource(datasource).pipeline(steps).outputs(outputs).treatments(treatments).hypotheses(hypotheses)
    return _build(config, builder)


def _load_027(
    config: YamlSource, reason: str, plugins: Sequence[BasePlugin] | None, experiment_class: type[Experiment] | None
) -> tuple[Experiment, list[Reference]]:
    """The experiment of a config in the 0.27 format (``reason`` says which shape told so)."""
    check_027_keys(config, reason)
    folder = config.file.parent
    name, description, replicates, initial_ctx = _header(config, folder)
    namespace = Namespace.import_folder(folder, config, only=FILES)
    built = build_027(config, namespace, name)
    builder = _builder(name, description, replicates, initial_ctx, plugins, experiment_class)
    builder.datasource(built.datasource()).pipeline(built.steps).outputs(list(built.outputs.values()))
    builder.treatments(built.treatments).hypotheses(built.hypotheses)
    experiment = _build(config, builder)
    experiment.outputs = dict(built.outputs)  # keyed by alias, as 0.27 keys them
    return experiment, built.references


def _builder(
    name: str,
    description: str | None,
    replicates: int,
    initial_ctx: dict[str, Any],
    plugins: Sequence[BasePlugin] | None,
    experiment_class: type[Experiment] | None,
) -> ExperimentBuilder:
    builder = (
        ExperimentBuilder(name, experiment_class=experiment_class)
        .plugins(plugins or [])
        .initial_ctx(initial_ctx)
        .replicates(replicates)
    )
    if description is not None:
        builder.description(description)
    return builder


def _build(config: YamlSource, builder: ExperimentBuilder) -> Experiment:
    try:
        return builder.build()  # creates the experiment and validates it
    except ValidationError as exc:
        raise ValidationError(f"{config.file}: {exc}") from exc


def _header(config: YamlSource, folder: Path) -> tuple[str, str | None, int, dict[str, Any]]:
    """The name, description, replicates and initial context, checked."""
    data = config.data
    name = data.get("name")
    if name is None:
        name = folder.resolve().name
        config.check_segment(name, "name", "experiment name (the folder's name; set 'name' to choose another)")
    else:
        config.check_segment(name, "name", "experiment name")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise config.expected("description", "a string", description)
    replicates = data.get("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise config.expected("replicates", "a positive integer", replicates)
    initial_ctx = data.get("initial_ctx")
    initial_ctx = {} if initial_ctx is None else initial_ctx
    config.check_mapping(initial_ctx, "initial_ctx", "a mapping of context keys to values")
    return name, description, replicates, initial_ctx


def _locate(path: Path) -> Path:
    """The config file of ``path``: the folder's ``config.yaml``, or ``path`` itself."""
    if path.is_dir():
        config_file = path / CONFIG_FILE
        if not config_file.is_file():
            raise ValidationError(
                f"{config_file}: no such file; expected an experiment folder holding {CONFIG_FILE} "
                "beside the Python modules it names"
            )
        return config_file
    if path.is_file():
        return path
    raise ValidationError(
        f"{path}: no such file or folder; expected an experiment folder holding {CONFIG_FILE}, or the YAML file itself"
    )
