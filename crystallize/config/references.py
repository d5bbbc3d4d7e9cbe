"""Finding the experiments a config refers to, and linking a consumer to its producers' outputs.

A config names its producer by experiment name (``"producer#output"`` in the 0.27 format,
``datasource.artifact.experiment`` in ours). The producer's folder is looked for where 0.27
looks (``<experiments root>/<producer>``, see :func:`find_experiments_root`) and beside the
consumer's folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..datasource import ExperimentInput
from ..errors import CrystallizeError
from .format027 import Reference
from .yaml_source import YamlSource

if TYPE_CHECKING:
    from ..experiment import Experiment

__all__ = ["ExperimentFolderNotFoundError", "find_experiments_root", "link_references", "producer_config"]

logger = logging.getLogger(__name__)

EXPERIMENTS_DIR = "experiments"


class ExperimentFolderNotFoundError(CrystallizeError, FileNotFoundError):
    """A folder of experiments, or the folder of a referenced experiment, does not exist
    (a ``FileNotFoundError``, as 0.27 raised)."""


def _experiments_root(start: Path) -> Path | None:
    start = start.resolve()
    for ancestor in (start, *start.parents):
        if ancestor.name == EXPERIMENTS_DIR:
            return ancestor
        if (ancestor / EXPERIMENTS_DIR).is_dir():
            return ancestor / EXPERIMENTS_DIR
    return None


def find_experiments_root(start: str | Path, *, strict: bool = True) -> Path:
    """The nearest folder at or above ``start`` that is named ``experiments``, or holds one.

    When there is none: ``strict`` raises :class:`ExperimentFolderNotFoundError` (a
    ``FileNotFoundError``); otherwise a warning is logged and ``start`` (resolved) returned.
    """
    start = Path(start)
    root = _experiments_root(start)
    if root is not None:
        return root
    if strict:
        raise ExperimentFolderNotFoundError(
            f"no '{EXPERIMENTS_DIR}' folder at or above {start.resolve()}; expected {start} to be inside a folder "
            f"named '{EXPERIMENTS_DIR}', or below one that holds it"
        )
    logger.warning(
        "No '%s' folder at or above %s; using %s itself as the root of the experiments",
        EXPERIMENTS_DIR,
        start.resolve(),
        start.resolve(),
    )
    return start.resolve()


def producer_config(consumer_file: Path, producer: str) -> Path | None:
    """The ``config.yaml`` of experiment ``producer`` as seen from a consumer's config, if there is one."""
    candidates = []
    root = _experiments_root(consumer_file.parent)
    if root is not None:
        candidates.append(root / producer / "config.yaml")
    candidates.append(consumer_file.resolve().parent.parent / producer / "config.yaml")
    return next((c for c in candidates if c.is_file()), None)


def missing_producer(config: YamlSource, path: str, producer: str) -> ExperimentFolderNotFoundError:
    where = config.line(path)
    at = f"{config.file}, line {where}" if where is not None else str(config.file)
    looked = [str(config.file.resolve().parent.parent / producer)]
    root = _experiments_root(config.file.parent)
    if root is not None and str(root / producer) not in looked:
        looked.insert(0, str(root / producer))
    return ExperimentFolderNotFoundError(
        f"{at}: {path}: Experiment '{producer}' not found; expected a folder holding config.yaml at "
        f"{' or '.join(looked)}"
    )


def link_references(
    experiment: Experiment,
    config: YamlSource,
    references: list[Reference],
    producers: Mapping[str, Experiment],
) -> None:
    """Replace each ``"producer#output"`` placeholder by the producer's own output ``Artifact``
    (its file name and loader; a graph then knows which experiment writes it)."""
    if not references:
        return
    linked: dict[str, Any] = {}
    for reference in references:
        producer = producers[reference.producer]
        output = producer.outputs.get(reference.output)
        if output is None:  # 0.27 wanted the alias; the file name is unambiguous enough to accept
            named = [a for a in producer.outputs.values() if getattr(a, "name", None) == reference.output]
            output = named[0] if len(named) == 1 else None
        if not isinstance(output, Artifact):
            known = ", ".join(producer.outputs) or "none"
            raise config.error(
                reference.path,
                f"experiment '{reference.producer}' has no output '{reference.output}'; expected one of its "
                f"outputs: {known}",
            )
        linked[reference.alias] = output
    source = experiment.datasource
    if isinstance(source, ExperimentInput):
        experiment.datasource = ExperimentInput(**{**source.inputs, **linked})
    else:  # a lone reference is still read through ExperimentInput, as 0.27 does
        experiment.datasource = ExperimentInput(**linked)
