"""Experiment folders in the format of Crystallize 0.27, loaded unchanged.

::

    my_experiment/
      config.yaml       # datasource: {alias: fn} | [{alias: fn}, ...] | {alias: "producer#output"}
                        # steps: [name | {name: {param: value}}]
                        # outputs: {alias: {file_name: ..., loader: fn, writer: fn}}
                        # treatments: {name: {key: value}}; hypotheses: [{name, verifier, metrics}]
      datasources.py    # the datasource factories (called with no arguments)
      steps.py          # the step factories (called with the entry's parameters)
      outputs.py        # loaders and writers of the outputs
      verifiers.py      # verifier factories (called with no arguments)

Only these four files are imported (a scaffolded ``main.py`` that loads the folder is
not run). A step parameter annotated ``Artifact`` gets the output of its name, or of the
alias the entry gives it (``{write: {out: results}}``); an output no step takes, or an
alias that is no output, is an error. ``"producer#output"`` reads the output ``output``
(its alias in the producer's config) of the experiment ``producer``: the loader links it
(see :mod:`.references`).

The format is told apart from ours by its shapes (:func:`detect`); errors are the same
:class:`~crystallize.errors.ValidationError` naming file, line and key.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..artifact import Artifact
from ..datasource import DataSource, ExperimentInput
from ..errors import ParameterError, ValidationError
from ..hypothesis import Hypothesis
from ..steps import PipelineStep
from ..treatment import Treatment
from .build import _construct, _instantiate, treatment_path
from .build_hypotheses import _build_verifier, _check_metrics
from .namespace import FUNCTION, SOURCE, STEP, VERIFIER, Namespace, is_verifier_factory
from .yaml_source import YamlSource, child_path

__all__ = ["FILES", "Built027", "Reference", "build_027", "detect"]

logger = logging.getLogger(__name__)

DATASOURCES, STEPS, OUTPUTS, VERIFIERS = "datasources", "steps", "outputs", "verifiers"
FILES = (DATASOURCES, STEPS, OUTPUTS, VERIFIERS)

# Keys 0.27 reads (``cli`` is its terminal app's); ``initial_ctx`` is ours, honoured in both formats.
KNOWN_KEYS = (
    "name",
    "description",
    "replicates",
    "cli",
    "datasource",
    "steps",
    "outputs",
    "treatments",
    "hypotheses",
    "initial_ctx",
)
_OUR_STEP_KEYS = {"name", "params", "exit"}


def detect(data: Mapping[str, Any]) -> str | None:
    """Why ``data`` is a 0.27 config (the first shape only that format has), or ``None`` for ours.

    ``datasource: {name: fn}`` means the same in both, so it is read as ours.
    """
    if "cli" in data:
        return "it has a 'cli' section"
    outputs = data.get("outputs")
    if isinstance(outputs, dict):
        return "'outputs' is a mapping of aliases"
    source = data.get("datasource")
    if isinstance(source, list):
        return "'datasource' is a list of {alias: function} mappings"
    if isinstance(source, dict) and source:
        if any(isinstance(v, str) and "#" in v for v in source.values()):
            return "'datasource' refers to another experiment's output as 'producer#output'"
        ours = (set(source) == {"artifact"} and isinstance(source["artifact"], dict)) or (
            "name" in source
            and set(source) <= {"name", "params"}
            and isinstance(source["name"], str)
            and isinstance(source.get("params", {}), (dict, type(None)))
        )
        if not ours:
            return "'datasource' is a mapping of aliases to functions"
    steps = data.get("steps")
    if isinstance(steps, list):
        for entry in steps:
            if isinstance(entry, dict) and not ("name" in entry and isinstance(entry["name"], str)):
                if len(entry) == 1 and not set(entry) <= _OUR_STEP_KEYS:
                    return "'steps' has a {step: {params}} entry"
    return None


@dataclass
class Reference:
    """A datasource input read from another experiment: ``alias: "producer#output"``."""

    alias: str
    producer: str
    output: str
    path: str  # the key path in the config, for errors


@dataclass
class Built027:
    """What a 0.27 config describes; references to other experiments are linked by the caller."""

    inputs: dict[str, DataSource]
    references: list[Reference]
    steps: list[PipelineStep]
    outputs: dict[str, Artifact]
    treatments: list[Treatment]
    hypotheses: list[Hypothesis]

    def datasource(self) -> DataSource:
        """One plain datasource as itself; several, or any reference, as an ``ExperimentInput``."""
        if len(self.inputs) == 1 and not self.references:
            return next(iter(self.inputs.values()))
        return ExperimentInput(**self.inputs)


def check_027_keys(config: YamlSource, reason: str) -> None:
    """0.27 ignored keys it did not know; they are logged here, as they are probably typos."""
    unknown = [str(k) for k in config.data if k not in KNOWN_KEYS]
    if unknown:
        logger.warning(
            "%s: ignoring unknown key(s) %s (read in the 0.27 format, as %s); known keys: %s",
            config.file,
            ", ".join(repr(k) for k in unknown),
            reason,
            ", ".join(KNOWN_KEYS),
        )
    if "datasource" not in config.data:
        raise config.error("datasource", "required key missing; expected {alias: function_in_datasources.py}")
    cli = config.data.get("cli")
    if cli is not None and not isinstance(cli, dict):
        raise config.expected("cli", "a mapping (settings of the terminal app)", cli)


def build_027(config: YamlSource, namespace: Namespace, experiment_name: str) -> Built027:
    """The parts of a 0.27 config, each name looked up in its fixed file."""
    per_file = {stem: _only(namespace, stem) for stem in FILES}
    inputs, references = _build_inputs(config, per_file[DATASOURCES], config.data["datasource"])
    outputs = _build_outputs(config, per_file[OUTPUTS], config.data.get("outputs"), experiment_name)
    steps = _build_steps(config, per_file[STEPS], config.data.get("steps"), outputs)
    treatments = _build_treatments(config, config.data.get("treatments"))
    hypotheses = _build_hypotheses(config, per_file[VERIFIERS], config.data.get("hypotheses"))
    return Built027(inputs, references, steps, outputs, treatments, hypotheses)


def _type_error(error: ValidationError) -> ParameterError:
    """The same error, also a ``TypeError``: where 0.27 raised one for a section of the wrong type."""
    return ParameterError(str(error))


def _only(namespace: Namespace, stem: str) -> Namespace:
    """The namespace of one fixed file (empty when the folder lacks it: lookups say so)."""
    modules = {stem: namespace.modules[stem]} if stem in namespace.modules else {}
    only = Namespace(namespace.folder, namespace.package, modules, namespace.config)
    only.missing_file = f"{stem}.py"
    return only


# ---------------------------------------------------------------- datasource


def _build_inputs(
    config: YamlSource, namespace: Namespace, value: Any
) -> tuple[dict[str, DataSource], list[Reference]]:
    expected = "a mapping {alias: function_in_datasources.py} (or a list of such mappings)"
    if value in (None, {}, []):
        raise config.expected("datasource", f"at least one datasource: {expected}", value)
    entries: list[tuple[str, Any, str]] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            path = f"datasource[{index}]"
            if not isinstance(item, dict) or not item:
                raise config.expected(path, "a mapping {alias: function_in_datasources.py}", item)
            entries.extend((str(alias), fn, child_path(path, str(alias))) for alias, fn in item.items())
    elif isinstance(value, dict):
        entries.extend((str(alias), fn, child_path("datasource", str(alias))) for alias, fn in value.items())
    else:
        raise _type_error(config.expected("datasource", f"{expected}: datasource must be provided as one", value))
    inputs: dict[str, DataSource] = {}
    references: list[Reference] = []
    for alias, ref, path in entries:
        if alias in inputs:
            raise config.error(path, f"a second datasource named '{alias}'; expected unique aliases")
        if not isinstance(ref, str) or not ref:
            raise config.expected(path, "the name of a function in datasources.py, or 'producer#output'", ref)
        if "#" in ref:
            producer, _, output = ref.partition("#")
            config.check_segment(producer, path, "experiment name (before '#')")
            if not output:
                raise config.expected(path, "'producer#output' with the output's alias after '#'", ref)
            references.append(Reference(alias, producer, output, path))
            # Linked to the producer's output by the loader; until then it names what it reads.
            inputs[alias] = Artifact(output, producer=producer)
            continue
        obj = namespace.lookup(ref, path, SOURCE)
        inputs[alias] = _instantiate(config, obj, {}, path, (DataSource,), "datasource")
    return inputs, references


# ---------------------------------------------------------------- outputs and steps


def _build_outputs(config: YamlSource, namespace: Namespace, value: Any, experiment_name: str) -> dict[str, Artifact]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise config.expected("outputs", "a mapping {alias: {file_name: ..., loader: ..., writer: ...}}", value)
    outputs: dict[str, Artifact] = {}
    for alias, spec in value.items():
        path = child_path("outputs", str(alias))
        alias = config.check_name(alias, path, "an output alias")
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise config.expected(path, "a mapping {file_name: ..., loader: ..., writer: ...} (or nothing)", spec)
        config.check_keys(spec, path, ("file_name", "loader", "writer"))
        file_name = config.check_name(spec.get("file_name", alias), child_path(path, "file_name"), "a file name")
        codecs: dict[str, Any] = {}
        for role in ("loader", "writer"):
            ref = spec.get(role)
            if ref is not None:
                codecs[role] = namespace.lookup(ref, child_path(path, role), FUNCTION)
        outputs[alias] = _construct(
            config, path, "the output", functools.partial(Artifact, file_name, producer=experiment_name, **codecs)
        )
    return outputs


def _takes_artifact(parameter: inspect.Parameter) -> bool:
    """Annotated ``Artifact`` (the class, or its name under ``from __future__ import annotations``)."""
    annotation = parameter.annotation
    if isinstance(annotation, str):
        return annotation == "Artifact" or annotation.endswith(".Artifact")
    return isinstance(annotation, type) and issubclass(annotation, Artifact)


def _build_steps(
    config: YamlSource, namespace: Namespace, value: Any, outputs: Mapping[str, Artifact]
) -> list[PipelineStep]:
    if not isinstance(value, list) or not value:
        raise config.expected("steps", "a non-empty list of step names or {step_name: {param: value}}", value)
    used: set[str] = set()
    steps = []
    for index, entry in enumerate(value):
        path = f"steps[{index}]"
        params: dict[str, Any] = {}
        if isinstance(entry, str):
            name, params_path = entry, path
        elif isinstance(entry, dict) and len(entry) == 1:
            name, given = next(iter(entry.items()))
            params_path = child_path(path, str(name))
            given = {} if given is None else given
            config.check_mapping(given, params_path, "a mapping of parameter names to values")
            params = dict(given)
        else:
            raise config.expected(path, "a step name or {step_name: {param: value}} (one key)", entry)
        obj = namespace.lookup(name, path, STEP)
        params = _bind_outputs(config, obj, name, params, params_path, outputs, used)
        steps.append(_instantiate(config, obj, params, path, (PipelineStep,), "step"))
    unused = sorted(set(outputs) - used)
    if unused:
        raise config.error(
            "outputs",
            f"Outputs not used in any step: {', '.join(unused)}; expected each output to be a parameter "
            "annotated 'Artifact' of a step (or to be removed)",
        )
    return steps


def _bind_outputs(
    config: YamlSource,
    factory: Any,
    step: str,
    params: dict[str, Any],
    path: str,
    outputs: Mapping[str, Artifact],
    used: set[str],
) -> dict[str, Any]:
    """``params`` with every ``Artifact`` parameter given its output: by alias, else by the parameter's name."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return params
    for name, parameter in signature.parameters.items():
        if not _takes_artifact(parameter):
            continue
        given = params.get(name)
        if isinstance(given, str):
            if given not in outputs:
                known = ", ".join(outputs) or "none"
                raise config.error(
                    child_path(path, name),
                    f"Output '{given}' requested by step '{step}' is not in experiment outputs (outputs: {known})",
                )
            params[name] = outputs[given]
            used.add(given)
        elif name not in params and name in outputs:
            params[name] = outputs[name]
            used.add(name)
    return params


# ---------------------------------------------------------------- treatments and hypotheses


def _build_treatments(config: YamlSource, value: Any) -> list[Treatment]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _type_error(config.expected("treatments", "a mapping of treatment names to {key: value}", value))
    treatments = []
    for name, apply in value.items():
        path = treatment_path(config, name)
        apply = {} if apply is None else apply
        config.check_mapping(apply, path, "a mapping of context keys to values")
        treatments.append(Treatment(name, dict(apply)))
    return treatments


def _build_hypotheses(config: YamlSource, namespace: Namespace, value: Any) -> list[Hypothesis]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config.expected("hypotheses", "a list of {name: ..., verifier: ..., metrics: ...}", value)
    hypotheses: list[Hypothesis] = []
    for index, entry in enumerate(value):
        path = f"hypotheses[{index}]"
        if not isinstance(entry, dict):
            raise config.expected(path, "{name: ..., verifier: ..., metrics: ...}", entry)
        config.check_keys(entry, path, ("name", "verifier", "metrics"), ("verifier",))
        name = entry.get("name")
        if name is not None:
            config.check_name(name, child_path(path, "name"), "a hypothesis name")
        verifier = _verifier(config, namespace, entry["verifier"], child_path(path, "verifier"))
        metrics = _check_metrics(config, entry.get("metrics"), child_path(path, "metrics"))
        make = functools.partial(Hypothesis, verifier=verifier, metrics=metrics, name=name)
        hypotheses.append(_construct(config, path, "the hypothesis", make))
    return hypotheses


def _verifier(config: YamlSource, namespace: Namespace, ref: Any, path: str) -> Any:
    """0.27 calls the named factory with no arguments; a plain function of no parameters is such a factory."""
    if isinstance(ref, str) and namespace.defines(ref):
        obj = namespace.lookup(ref, path, VERIFIER)
        if inspect.isfunction(obj) and not is_verifier_factory(obj) and not inspect.signature(obj).parameters:
            return _construct(config, path, "the verifier", obj)
    return _build_verifier(config, namespace, ref, path)
