"""Building the datasource, steps, treatments and outputs from their sections of the config.

The shape of a section is checked before the folder's modules are imported (so a typo
costs no import); the ``build_*`` functions then resolve its names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..artifact import Artifact
from ..constants import BASELINE_CONDITION
from ..datasource import DataSource
from ..errors import ValidationError
from ..steps import PipelineStep, exit_step
from ..treatment import Treatment
from .codecs import LOADERS, WRITERS, codec
from .namespace import SOURCE, STEP, TREATMENT, Namespace, what
from .yaml_source import YamlSource, child_path

__all__ = [
    "build_datasource",
    "build_outputs",
    "build_steps",
    "build_treatments",
    "check_datasource_shape",
    "check_steps_shape",
    "params_of",
]

T = TypeVar("T")
Part = TypeVar("Part", DataSource, PipelineStep)


def params_of(config: YamlSource, entry: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The ``params`` mapping of an entry, or ``{}``."""
    params = entry.get("params")
    if params is None:
        return {}
    config.check_mapping(params, child_path(path, "params"), "a mapping of parameter names to values")
    return dict(params)


def _construct(config: YamlSource, path: str, label: str, build: Callable[[], T]) -> T:
    """``build()``, with any error it raises placed at ``path``."""
    try:
        return build()
    except ValidationError as exc:
        raise config.error(path, str(exc)) from exc
    except Exception as exc:
        raise config.error(path, f"cannot create {label}: {type(exc).__name__}: {exc}") from exc


def _instantiate(
    config: YamlSource, obj: Any, params: dict[str, Any], path: str, base: tuple[type[Part], ...], label: str
) -> Part:
    """``obj`` if it already is a ``base``, else what calling it with ``params`` makes.

    ``base`` is a tuple of one class: mypy accepts no abstract class where ``type[...]`` is expected.
    """
    params_path = child_path(path, "params") if path else "params"
    if isinstance(obj, base):
        if params:
            raise config.error(
                params_path, f"'{obj.name}' is already a {label} object; expected no params (or name its factory)"
            )
        return obj
    factory = obj
    built = _construct(config, params_path if params else path, f"the {label}", lambda: factory(**params))
    if not isinstance(built, base):
        raise config.error(path, f"calling it gave {what(built)}; expected a {base[0].__name__}")
    return built


def check_datasource_shape(config: YamlSource, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, dict):
        raise config.expected("datasource", "a datasource name, {name: ..., params: {...}} or {artifact: {...}}", value)
    if "artifact" in value:
        config.check_keys(value, "datasource", ("artifact",))
        artifact = value["artifact"]
        if not isinstance(artifact, dict):
            raise config.expected(
                "datasource.artifact", "a mapping {experiment: ..., name: ..., loader: ..., condition: ...}", artifact
            )
        config.check_keys(
            artifact,
            "datasource.artifact",
            ("experiment", "name", "loader", "condition", "step"),
            ("experiment", "name"),
        )
        return
    config.check_keys(value, "datasource", ("name", "params"), ("name",))


def build_datasource(config: YamlSource, namespace: Namespace, value: Any) -> DataSource:
    if isinstance(value, dict) and "artifact" in value:
        return _build_artifact_source(config, namespace, value["artifact"])
    if isinstance(value, str):
        obj = namespace.lookup(value, "datasource", SOURCE)
        return _instantiate(config, obj, {}, "datasource", (DataSource,), "datasource")
    obj = namespace.lookup(value["name"], "datasource.name", SOURCE)
    return _instantiate(config, obj, params_of(config, value, "datasource"), "datasource", (DataSource,), "datasource")


def _build_artifact_source(config: YamlSource, namespace: Namespace, spec: Mapping[str, Any]) -> DataSource:
    path = "datasource.artifact"
    producer = config.check_segment(spec["experiment"], f"{path}.experiment", "experiment name")
    name = config.check_name(spec["name"], f"{path}.name", "the artifact's file name (numbers.json)")
    condition = config.check_segment(spec.get("condition", BASELINE_CONDITION), f"{path}.condition", "condition name")
    step = spec.get("step")
    if step is not None:
        config.check_segment(step, f"{path}.step", "step name")
    loader = codec(config, namespace, spec.get("loader"), f"{path}.loader", LOADERS)
    config.artifact_producer = producer
    return _construct(
        config,
        path,
        "the artifact",
        lambda: Artifact(name, loader=loader, producer=producer, condition=condition, step=step),
    )


def check_steps_shape(config: YamlSource, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise config.expected("steps", "a non-empty list of step names or {name: ..., params: {...}}", value)
    for index, entry in enumerate(value):
        path = f"steps[{index}]"
        if isinstance(entry, str):
            continue
        if not isinstance(entry, dict):
            raise config.expected(path, "a step name or {name: ..., params: {...}, exit: true}", entry)
        config.check_keys(entry, path, ("name", "params", "exit"), ("name",))
        if "exit" in entry and not isinstance(entry["exit"], bool):
            raise config.expected(f"{path}.exit", "true or false", entry["exit"])


def build_steps(config: YamlSource, namespace: Namespace, value: list[Any]) -> list[PipelineStep]:
    steps = []
    for index, entry in enumerate(value):
        path = f"steps[{index}]"
        if isinstance(entry, str):
            obj = namespace.lookup(entry, path, STEP)
            step = _instantiate(config, obj, {}, path, (PipelineStep,), "step")
        else:
            obj = namespace.lookup(entry["name"], f"{path}.name", STEP)
            step = _instantiate(config, obj, params_of(config, entry, path), path, (PipelineStep,), "step")
            if entry.get("exit"):
                step = exit_step(step)
        steps.append(step)
    return steps


def treatment_path(config: YamlSource, name: Any) -> str:
    """The config path of treatment ``name``, once the name is one a treatment may have (both formats)."""
    path = child_path("treatments", str(name))
    config.check_segment(name, path, "treatment name")
    if name == BASELINE_CONDITION:
        raise config.error(path, f"'{BASELINE_CONDITION}' is the condition without treatment; expected another name")
    return path


def build_treatments(config: YamlSource, namespace: Namespace, value: Any) -> list[Treatment]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise config.expected("treatments", "a mapping of treatment names to context values or a function name", value)
    treatments = []
    for name, apply in value.items():
        path = treatment_path(config, name)
        if isinstance(apply, dict):
            config.check_mapping(apply, path, "a mapping of context keys to values")
            treatments.append(Treatment(name, apply))
        elif isinstance(apply, str):
            obj = namespace.lookup(apply, path, TREATMENT)
            if isinstance(obj, Treatment):
                treatments.append(obj if obj.name == name else Treatment(name, obj._apply))
            else:
                treatments.append(Treatment(name, obj))
        else:
            raise config.expected(path, "a mapping of context values ({delta: 10}) or the name of a @treatment", apply)
    return treatments


def build_outputs(config: YamlSource, namespace: Namespace, value: Any, experiment_name: str) -> list[Artifact]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config.expected("outputs", "a list of artifact names or {name: ..., loader: ...}", value)
    outputs = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        path = f"outputs[{index}]"
        if isinstance(entry, str):
            entry = {"name": entry}
            name_path = path
        elif isinstance(entry, dict):
            config.check_keys(entry, path, ("name", "loader", "writer"), ("name",))
            name_path = f"{path}.name"
        else:
            raise config.expected(path, "an artifact name or {name: ..., loader: ...}", entry)
        name = config.check_name(entry["name"], name_path, "the artifact's file name (numbers.json)")
        if name in seen:
            raise config.error(name_path, f"a second output named '{name}'; expected unique names")
        seen.add(name)
        loader = codec(config, namespace, entry.get("loader"), f"{path}.loader", LOADERS)
        writer = codec(config, namespace, entry.get("writer"), f"{path}.writer", WRITERS)
        outputs.append(
            _construct(
                config,
                name_path,
                "the artifact",
                functools.partial(Artifact, name, loader=loader, writer=writer, producer=experiment_name),
            )
        )
    return outputs
