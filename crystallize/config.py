"""Experiments defined as folders: a ``config.yaml`` beside the Python modules it names.

::

    my_experiment/
      config.yaml     # what to run: names of functions, their parameters, treatments, hypotheses
      steps.py        # @data_source, @pipeline_step, @verifier ... (any *.py file in the folder)

``config.yaml``::

    name: basic                      # default: the folder's name
    description: optional text
    replicates: 12                   # positive integer, default 1
    datasource: fetch_numbers        # or {name: fetch_numbers, params: {...}}
                                     # or {artifact: {experiment: producer, name: numbers.json,
                                     #                loader: json, condition: baseline}}
    steps:
      - add_delta                    # or {name: add_delta, params: {delta: 1.0}, exit: true}
      - summarize
    treatments:
      boost_total: {delta: 10.0}     # context values, or the name of a @treatment / fn(ctx)
    hypotheses:
      - name: order_by_p_value
        verifier: welch_t_test       # or {name: welch_t_test, params: {alpha: 0.01}}
        metrics: total               # a name, a list, or a list of lists
        ranker: rank_fn              # optional; default: lowest p_value first
    initial_ctx: {key: value}
    outputs: [numbers.json]          # artifacts this experiment writes; or [{name: ..., loader: json}]

Every ``*.py`` file of the folder (not its subfolders) is imported as a module of a
package private to the folder, so two folders may both have a ``steps.py`` (modules of
one folder import each other relatively: ``from .helpers import f``). Names are looked
up across the folder's modules; write ``module.name`` when two modules define one.
The modules are registered with cloudpickle to travel by value, so process and Ray
workers get their functions without importing the folder.

Errors are :class:`~crystallize.errors.ValidationError` naming the file, the line, the
key (``steps[1].params``) and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import pickle
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import yaml

from .constants import BASELINE_CONDITION
from .datasource import DataSource
from .decorators import VerifierCallable
from .errors import ValidationError
from .hypothesis import Hypothesis
from .pipeline import Pipeline
from .steps import PipelineStep, exit_step
from .treatment import Treatment

if TYPE_CHECKING:
    from .experiment import Experiment
    from .plugins.base import BasePlugin

__all__ = ["CONFIG_FILE", "load_experiment", "load_experiment_folder"]

CONFIG_FILE = "config.yaml"

_TOP_KEYS = (
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
_REQUIRED_TOP_KEYS = ("datasource", "steps")


# ---------------------------------------------------------------------------- public API


def load_experiment(path: str | os.PathLike[str], plugins: Sequence[BasePlugin] | None = None) -> Experiment:
    """The experiment configured by ``path``: a folder holding ``config.yaml``, or the YAML file itself.

    ``plugins`` (execution, seed, ...) are passed to the experiment as they are; the
    config does not choose them.
    """
    return _load(path, plugins)[0]


def load_experiment_folder(path: str | os.PathLike[str]) -> list[Experiment]:
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
            return [load_experiment(folder)]
        raise ValidationError(
            f"{folder}: no subfolder has a {CONFIG_FILE}; expected one folder per experiment, each with a {CONFIG_FILE}"
        )
    loaded = [_load(child, None) for child in children]
    by_name: dict[str, _Config] = {}
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
                f"no experiment named '{producer}' in {folder}{_did_you_mean(producer, by_name)}; "
                f"expected one of: {', '.join(sorted(by_name))}",
            )
    return [experiment for experiment, _ in loaded]


# ---------------------------------------------------------------------------- loading


def _load(path: str | os.PathLike[str], plugins: Sequence[BasePlugin] | None) -> tuple[Experiment, _Config]:
    from .experiment import Experiment

    config_file = _locate(Path(path))
    config = _Config.read(config_file)
    data = config.data
    config.check_keys(data, "", _TOP_KEYS, _REQUIRED_TOP_KEYS)
    folder = config_file.parent

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

    # The structure is checked before any module is imported; then the names are resolved.
    _check_datasource_shape(config, data["datasource"])
    _check_steps_shape(config, data["steps"])
    namespace = _Namespace.import_folder(folder, config)

    datasource = _build_datasource(config, namespace, data["datasource"])
    steps = _build_steps(config, namespace, data["steps"])
    treatments = _build_treatments(config, namespace, data.get("treatments"))
    hypotheses = _build_hypotheses(config, namespace, data.get("hypotheses"))
    if hypotheses and not treatments:
        raise config.error(
            "hypotheses",
            "hypotheses compare treatments with the baseline; expected at least one entry under 'treatments'",
        )
    outputs = _build_outputs(config, namespace, data.get("outputs"), name)

    try:
        experiment = Experiment(
            datasource,
            Pipeline(steps),
            plugins,
            name=name,
            description=description,
            initial_ctx=initial_ctx,
            outputs=outputs,
            treatments=treatments,
            hypotheses=hypotheses,
            replicates=replicates,
        )
        experiment.validate()
    except ValidationError as exc:
        raise ValidationError(f"{config.file}: {exc}") from exc
    return experiment, config


def _locate(path: Path) -> Path:
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


# ---------------------------------------------------------------------------- the config file


class _Config:
    """The parsed YAML, where each key path sits in the file, and error messages that say so."""

    def __init__(self, file: Path, data: dict[str, Any], lines: dict[str, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines
        self.artifact_producer: str | None = None

    @classmethod
    def read(cls, file: Path) -> _Config:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{file}: cannot read it: {exc}") from exc
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            lines = _line_map(file, node)
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{file}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(file)
            context = exc.context
            if context and exc.context_mark is not None and exc.context_mark is not mark:
                context = f"{context} (line {exc.context_mark.line + 1})"
            problem = " ".join(part for part in (context, exc.problem) if part)
            raise ValidationError(f"{where}: invalid YAML: {problem}") from exc
        except yaml.YAMLError as exc:
            raise ValidationError(f"{file}: invalid YAML: {exc}") from exc
        finally:
            loader.dispose()
        if data is None:
            raise ValidationError(
                f"{file}: the file is empty; expected a mapping with at least 'datasource' and 'steps'"
            )
        if not isinstance(data, dict):
            raise ValidationError(
                f"{file}: expected a mapping of keys (datasource, steps, ...) at the top, got {_describe(data)}"
            )
        return cls(file, data, lines)

    # -- errors

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return None

    def error(self, path: str, message: str) -> ValidationError:
        line = self.line(path)
        where = f"{self.file}, line {line}" if line is not None else str(self.file)
        return ValidationError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def expected(self, path: str, what: str, got: Any) -> ValidationError:
        return self.error(path, f"expected {what}, got {_describe(got)}")

    # -- checks

    def check_keys(
        self, mapping: Mapping[Any, Any], path: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.error(
                    _child(path, str(key)),
                    f"unknown key '{key}'{_did_you_mean(str(key), allowed)}; expected one of: {', '.join(allowed)}",
                )
        for key in required:
            if key not in mapping:
                raise self.error(_child(path, key), f"required key missing{_REQUIRED_HINTS.get(key, '')}")

    def check_mapping(self, value: Any, path: str, what: str) -> None:
        if not isinstance(value, dict):
            raise self.expected(path, what, value)
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"expected string keys, got {_describe(key)}")

    def check_name(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.expected(path, what, value)
        return value

    def check_segment(self, value: Any, path: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.expected(path, f"a non-empty {what}", value)
        if value in (".", "..") or value.strip() != value or re.search(r"[\x00-\x1f\x7f/\\]", value):
            raise self.error(
                path,
                f"{what} {value!r} cannot be used as a folder name; expected a name without '/', '\\', "
                "control characters, surrounding spaces, or '.'/'..'",
            )
        return value


_REQUIRED_HINTS = {
    "datasource": "; expected the name of a @data_source function (datasource: fetch_numbers)",
    "steps": "; expected a list of @pipeline_step names (steps: [add_delta, summarize])",
    "name": "; expected a name",
    "verifier": "; expected the name of a @verifier function",
    "experiment": "; expected the name of the experiment that writes the artifact",
}


def _line_map(file: Path, root: yaml.Node | None) -> dict[str, int]:
    """``{"steps[1].params": line}`` for every key and list item (1-based lines); rejects duplicate keys."""
    lines: dict[str, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in active:  # a recursive alias
            return
        active.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                child = _child(path, str(key))
                if key is not None and key != "<<":
                    if key in seen:
                        raise ValidationError(
                            f"{file}, line {line}: {child}: duplicate key '{key}' (first on line {seen[key]}); "
                            "expected each key once"
                        )
                    seen[key] = line
                lines.setdefault(child, line)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                walk(item, child)
        active.discard(id(node))

    if root is not None:
        walk(root, "")
    return lines


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (str, bool, int, float)):
        return f"{value!r} ({type(value).__name__})"
    return type(value).__name__


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------- the folder's modules


class _Kind:
    """What a name in the config must resolve to (a step, a verifier ...)."""

    def __init__(
        self,
        label: str,
        expected: str,
        accepts: Callable[[Any], bool],
        hint: str = "",
        typical: Callable[[Any], bool] | None = None,
    ) -> None:
        self.label = label
        self.expected = expected
        self.accepts = accepts
        self.hint = hint
        self.typical = typical  # when some names are of this narrower kind, only they are listed


def _is_step(obj: Any) -> bool:
    return (
        callable(getattr(obj, "step_function", None))
        or isinstance(obj, PipelineStep)
        or (isinstance(obj, type) and issubclass(obj, PipelineStep) and not inspect.isabstract(obj))
    )


def _is_source(obj: Any) -> bool:
    return (
        callable(getattr(obj, "source_function", None))
        or isinstance(obj, DataSource)
        or (isinstance(obj, type) and issubclass(obj, DataSource) and not inspect.isabstract(obj))
    )


def _is_plain_function(obj: Any) -> bool:
    """A user function (or callable object) that is not a step, datasource, treatment or class."""
    return (
        callable(obj)
        and not isinstance(obj, (type, Treatment, Hypothesis, DataSource, PipelineStep, types.ModuleType))
        and not _is_step(obj)
        and not _is_source(obj)
    )


_DECORATE_HINT = " (a plain function must be decorated with @{decorator})"

_SOURCE = _Kind(
    "datasource",
    "a @data_source function or a DataSource class or instance",
    _is_source,
    _DECORATE_HINT.format(decorator="data_source"),
)
_STEP = _Kind(
    "step",
    "a @pipeline_step function or a PipelineStep class or instance",
    _is_step,
    _DECORATE_HINT.format(decorator="pipeline_step"),
)
_VERIFIER = _Kind(
    "verifier",
    "a @verifier function (or a function of baseline, treatment)",
    _is_plain_function,
    typical=lambda obj: isinstance(obj, VerifierCallable) or _is_verifier_factory(obj),
)
_RANKER = _Kind("ranker", "a function of the verifier's result returning a score", _is_plain_function)
_TREATMENT = _Kind(
    "treatment",
    "a @treatment or a function of the context",
    lambda obj: isinstance(obj, Treatment) or _is_plain_function(obj),
)
_HYPOTHESIS = _Kind("hypothesis", "a @hypothesis", lambda obj: isinstance(obj, Hypothesis))
_FUNCTION = _Kind("function", "a function", _is_plain_function)


class _Namespace:
    """The modules of one experiment folder, imported under a package private to that folder."""

    def __init__(self, folder: Path, package: str, modules: dict[str, types.ModuleType], config: _Config) -> None:
        self.folder = folder
        self.package = package
        self.modules = modules
        self.config = config

    @classmethod
    def import_folder(cls, folder: Path, config: _Config) -> _Namespace:
        package = _package_name(folder)
        for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[loaded]  # a fresh import on every load: edits to the modules take effect
        importlib.invalidate_caches()  # files written a moment ago (tests, generated folders) must be found
        files = sorted(p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith("."))
        init = folder / "__init__.py"
        stems = [p.stem for p in files if p.name != "__init__.py"]
        try:
            if init.is_file():
                spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
                assert spec is not None and spec.loader is not None
                root = importlib.util.module_from_spec(spec)
                sys.modules[package] = root
                spec.loader.exec_module(root)
            else:
                root = types.ModuleType(package, f"modules of the experiment folder {folder}")
                root.__path__ = [str(folder)]
                root.__package__ = package
                sys.modules[package] = root
            cloudpickle.register_pickle_by_value(root)
        except Exception as exc:
            _forget(package)
            raise _import_error(init, "__init__", exc, folder, stems, config) from exc
        modules: dict[str, types.ModuleType] = {}
        for stem in stems:
            qualified = f"{package}.{stem}"
            try:
                # A sibling's relative import may have loaded it already in this pass: use that module.
                module = sys.modules.get(qualified) or importlib.import_module(qualified)
            except Exception as exc:
                _forget(package)
                raise _import_error(folder / f"{stem}.py", stem, exc, folder, stems, config) from exc
            cloudpickle.register_pickle_by_value(module)
            modules[stem] = module
        return cls(folder, package, modules, config)

    def lookup(self, ref: Any, path: str, kind: _Kind) -> Any:
        """The object ``ref`` names across the folder's modules (``module.name`` picks one module)."""
        config = self.config
        if not isinstance(ref, str) or not ref:
            raise config.expected(path, f"the name of {kind.expected}", ref)
        module_name, dot, attr = ref.partition(".")
        if dot and module_name in self.modules:
            module = self.modules[module_name]
            if not hasattr(module, attr):
                raise config.error(
                    path,
                    f"module {module_name}.py has no '{attr}'"
                    f"{_did_you_mean(attr, self._names(kind, [module]))}; expected {kind.expected}",
                )
            found = {module_name: getattr(module, attr)}
        else:
            found = {stem: vars(module)[ref] for stem, module in self.modules.items() if ref in vars(module)}
        if not found:
            candidates = self._names(kind, self.modules.values())
            listing = f"; {kind.label}s defined here: {', '.join(candidates)}" if candidates else ""
            raise config.error(
                path,
                f"no {kind.label} named '{ref}' in {self._where()}{_did_you_mean(ref, candidates)}; "
                f"expected {kind.expected}{listing}",
            )
        distinct: dict[int, list[str]] = {}
        for stem, obj in found.items():
            distinct.setdefault(id(obj), []).append(stem)
        if len(distinct) > 1:
            files = " and ".join(f"{stem}.py" for stem in found)
            first = next(iter(found))
            raise config.error(
                path,
                f"'{ref}' is ambiguous: {files} each define a different '{ref}'; "
                f"expected one definition (rename one, or write '{first}.{ref}')",
            )
        stem, obj = next(iter(found.items()))
        if not kind.accepts(obj):
            hint = kind.hint if _is_plain_function(obj) else ""
            raise config.error(path, f"'{ref}' in {stem}.py is {_what(obj)}, expected {kind.expected}{hint}")
        return obj

    def _names(self, kind: _Kind, modules: Iterable[types.ModuleType]) -> list[str]:
        """Public names of the right kind defined in this folder (not the ones its modules import)."""
        names: set[str] = set()
        for module in modules:
            for name, obj in vars(module).items():
                if name.startswith("_") or not _defined_here(obj, self.package):
                    continue
                try:
                    if kind.accepts(obj):
                        names.add(name)
                except Exception:  # noqa: BLE001 - an odd object is simply not a candidate
                    continue
        if kind.typical is not None:
            typical = {name for module in modules for name in names if kind.typical(vars(module).get(name))}
            return sorted(typical or names)
        return sorted(names)

    def defines(self, ref: str) -> bool:
        module_name, dot, attr = ref.partition(".")
        if dot and module_name in self.modules:
            return hasattr(self.modules[module_name], attr)
        return any(ref in vars(module) for module in self.modules.values())

    def _where(self) -> str:
        files = [f"{stem}.py" for stem in self.modules]
        if not files:
            return f"{self.folder} (it has no Python modules)"
        return ", ".join(files)


def _package_name(folder: Path) -> str:
    resolved = str(folder.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    readable = re.sub(r"\W", "_", folder.resolve().name)[:40] or "folder"
    return f"crystallize_experiment_{readable}_{digest}"


def _forget(package: str) -> None:
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[loaded]


def _defined_here(obj: Any, package: str) -> bool:
    module = getattr(obj, "__module__", None)
    if module is None and not isinstance(obj, type):
        module = getattr(type(obj), "__module__", None)
    if isinstance(obj, (Treatment, Hypothesis, VerifierCallable)):
        return True  # instances made by decorators: their class lives in crystallize, the object here
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def _what(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "a module"
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    if _is_step(obj):
        return "a step"
    if _is_source(obj):
        return "a datasource"
    if isinstance(obj, Treatment):
        return f"the treatment {obj.name!r}"
    if isinstance(obj, Hypothesis):
        return f"the hypothesis {obj.name!r}"
    if inspect.isfunction(obj):
        return "a plain function"
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return _describe(obj)
    return f"an object of type {type(obj).__name__}"


def _import_error(
    file: Path, stem: str, exc: BaseException, folder: Path, stems: Sequence[str], config: _Config
) -> ValidationError:
    where, line = str(file), None
    if isinstance(exc, SyntaxError) and exc.filename:
        where, line = str(folder / Path(exc.filename).name), exc.lineno
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            frame_path = Path(frame.filename)
            if frame_path.parent.resolve() == folder.resolve():
                where, line = str(folder / frame_path.name), frame.lineno
                break
    location = f"{where}, line {line}" if line else where
    hint = ""
    if isinstance(exc, ModuleNotFoundError) and exc.name in stems:
        hint = (
            f" (modules of an experiment folder import each other relatively: 'from .{exc.name} import ...', "
            f"or 'from . import {exc.name}')"
        )
    return ValidationError(
        f"{location}: cannot import module '{stem}' of the experiment folder (for {config.file}): "
        f"{type(exc).__name__}: {exc}{hint}"
    )


# ---------------------------------------------------------------------------- building the pieces


def _params(config: _Config, entry: Mapping[str, Any], path: str) -> dict[str, Any]:
    params = entry.get("params")
    if params is None:
        return {}
    config.check_mapping(params, _child(path, "params"), "a mapping of parameter names to values")
    return dict(params)


def _construct(config: _Config, path: str, what: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ValidationError as exc:
        raise config.error(path, str(exc)) from exc
    except Exception as exc:
        raise config.error(path, f"cannot create {what}: {type(exc).__name__}: {exc}") from exc


def _instantiate(config: _Config, obj: Any, params: dict[str, Any], path: str, base: type, label: str) -> Any:
    params_path = _child(path, "params") if path else "params"
    if isinstance(obj, base):
        if params:
            raise config.error(
                params_path, f"'{obj.name}' is already a {label} object; expected no params (or name its factory)"
            )
        return obj
    factory = obj
    built = _construct(config, params_path if params else path, f"the {label}", lambda: factory(**params))
    if not isinstance(built, base):
        raise config.error(path, f"calling it gave {_what(built)}; expected a {base.__name__}")
    return built


def _check_datasource_shape(config: _Config, value: Any) -> None:
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


def _build_datasource(config: _Config, namespace: _Namespace, value: Any) -> DataSource:
    if isinstance(value, dict) and "artifact" in value:
        return _build_artifact_source(config, namespace, value["artifact"])
    if isinstance(value, str):
        obj = namespace.lookup(value, "datasource", _SOURCE)
        return _instantiate(config, obj, {}, "datasource", DataSource, "datasource")
    obj = namespace.lookup(value["name"], "datasource.name", _SOURCE)
    return _instantiate(config, obj, _params(config, value, "datasource"), "datasource", DataSource, "datasource")


def _build_artifact_source(config: _Config, namespace: _Namespace, spec: Mapping[str, Any]) -> DataSource:
    from .artifact import Artifact

    path = "datasource.artifact"
    producer = config.check_segment(spec["experiment"], f"{path}.experiment", "experiment name")
    name = config.check_name(spec["name"], f"{path}.name", "the artifact's file name (numbers.json)")
    condition = config.check_segment(spec.get("condition", BASELINE_CONDITION), f"{path}.condition", "condition name")
    step = spec.get("step")
    if step is not None:
        config.check_segment(step, f"{path}.step", "step name")
    loader = _codec(config, namespace, spec.get("loader"), f"{path}.loader", _LOADERS)
    config.artifact_producer = producer
    return _construct(
        config,
        path,
        "the artifact",
        lambda: Artifact(name, loader=loader, producer=producer, condition=condition, step=step),
    )


def _check_steps_shape(config: _Config, value: Any) -> None:
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


def _build_steps(config: _Config, namespace: _Namespace, value: list[Any]) -> list[PipelineStep]:
    steps = []
    for index, entry in enumerate(value):
        path = f"steps[{index}]"
        if isinstance(entry, str):
            obj = namespace.lookup(entry, path, _STEP)
            step = _instantiate(config, obj, {}, path, PipelineStep, "step")
        else:
            obj = namespace.lookup(entry["name"], f"{path}.name", _STEP)
            step = _instantiate(config, obj, _params(config, entry, path), path, PipelineStep, "step")
            if entry.get("exit"):
                step = exit_step(step)
        steps.append(step)
    return steps


def _build_treatments(config: _Config, namespace: _Namespace, value: Any) -> list[Treatment]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise config.expected("treatments", "a mapping of treatment names to context values or a function name", value)
    treatments = []
    for name, apply in value.items():
        path = _child("treatments", str(name))
        config.check_segment(name, path, "treatment name")
        if name == BASELINE_CONDITION:
            raise config.error(
                path, f"'{BASELINE_CONDITION}' is the condition without treatment; expected another name"
            )
        if isinstance(apply, dict):
            config.check_mapping(apply, path, "a mapping of context keys to values")
            treatments.append(Treatment(name, apply))
        elif isinstance(apply, str):
            obj = namespace.lookup(apply, path, _TREATMENT)
            if isinstance(obj, Treatment):
                treatments.append(obj if obj.name == name else Treatment(name, obj._apply))
            else:
                treatments.append(Treatment(name, obj))
        else:
            raise config.expected(path, "a mapping of context values ({delta: 10}) or the name of a @treatment", apply)
    return treatments


def _build_hypotheses(config: _Config, namespace: _Namespace, value: Any) -> list[Hypothesis]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config.expected("hypotheses", "a list of {name: ..., verifier: ..., metrics: ...}", value)
    hypotheses: list[Hypothesis] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        path = f"hypotheses[{index}]"
        if isinstance(entry, str):
            hyp = namespace.lookup(entry, path, _HYPOTHESIS)
        elif isinstance(entry, dict):
            config.check_keys(entry, path, ("name", "verifier", "metrics", "ranker"), ("name", "verifier"))
            name = config.check_name(entry["name"], f"{path}.name", "a hypothesis name")
            hyp = Hypothesis(
                verifier=_build_verifier(config, namespace, entry["verifier"], f"{path}.verifier"),
                metrics=_check_metrics(config, entry.get("metrics"), f"{path}.metrics"),
                ranker=_build_ranker(config, namespace, entry.get("ranker"), f"{path}.ranker"),
                name=name,
            )
        else:
            raise config.expected(path, "{name: ..., verifier: ..., metrics: ...} or the name of a @hypothesis", entry)
        if hyp.name in seen:
            raise config.error(path, f"a second hypothesis named '{hyp.name}'; expected unique names")
        seen.add(hyp.name)
        hypotheses.append(hyp)
    return hypotheses


def _build_verifier(config: _Config, namespace: _Namespace, value: Any, path: str) -> Callable[..., Any]:
    if isinstance(value, dict):
        config.check_keys(value, path, ("name", "params"), ("name",))
        ref, ref_path, params = value["name"], _child(path, "name"), _params(config, value, path)
    else:
        ref, ref_path, params = value, path, {}
    obj = namespace.lookup(ref, ref_path, _VERIFIER)
    if isinstance(obj, VerifierCallable):
        if params:
            raise config.error(_child(path, "params"), f"'{ref}' already has its parameters bound; expected no params")
        return obj
    # A @verifier factory wraps the function it was given: bind the parameters to that function directly.
    fn = obj.verifier_function if _is_verifier_factory(obj) else obj
    try:
        inspect.signature(fn).bind({}, {}, **params)
    except TypeError as exc:
        raise config.error(
            _child(path, "params") if params else path,
            f"'{ref}' cannot be called as {ref}(baseline, treatment{''.join(f', {k}=...' for k in params)}): {exc}",
        ) from exc
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    return VerifierCallable(fn, params)


def _is_verifier_factory(obj: Any) -> bool:
    """A ``@verifier`` factory (it carries the decorated function)."""
    return callable(obj) and hasattr(obj, "verifier_function")


def _build_ranker(config: _Config, namespace: _Namespace, value: Any, path: str) -> Callable[[Any], float] | None:
    if value is None:
        return None
    ranker = namespace.lookup(value, path, _RANKER)
    try:
        inspect.signature(ranker).bind({})
    except TypeError as exc:
        raise config.error(path, f"'{value}' cannot be called with the verifier's result: {exc}") from exc
    except ValueError:
        pass
    return ranker


def _check_metrics(config: _Config, value: Any, path: str) -> Any:
    if value is None or isinstance(value, str):
        return value
    expected = "a metric name, a list of names, or a list of lists of names"
    if not isinstance(value, list) or not value:
        raise config.expected(path, expected, value)
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, list) and item and all(isinstance(m, str) for m in item) for item in value):
        return [list(item) for item in value]
    raise config.error(path, f"expected {expected}; got a list mixing names and lists (or with empty lists)")


def _build_outputs(config: _Config, namespace: _Namespace, value: Any, experiment_name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise config.expected("outputs", "a list of artifact names or {name: ..., loader: ...}", value)
    from .artifact import Artifact

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
        loader = _codec(config, namespace, entry.get("loader"), f"{path}.loader", _LOADERS)
        writer = _codec(config, namespace, entry.get("writer"), f"{path}.writer", _WRITERS)
        outputs.append(
            _construct(
                config,
                name_path,
                "the artifact",
                lambda name=name, loader=loader, writer=writer: Artifact(
                    name, loader=loader, writer=writer, producer=experiment_name
                ),
            )
        )
    return outputs


# Loaders and writers named in the config. Module-level functions, so they pickle by reference.


def load_json(data: bytes) -> Any:
    return json.loads(data)


def load_text(data: bytes) -> str:
    return data.decode("utf-8")


def load_bytes(data: bytes) -> bytes:
    return data


def load_pickle(data: bytes) -> Any:
    return pickle.loads(data)  # the user's own artifacts, as the config asks


def write_json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def write_text(value: Any) -> bytes:
    return str(value).encode("utf-8")


def write_bytes(value: Any) -> bytes:
    return bytes(value)


def write_pickle(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


_LOADERS: dict[str, Callable[[bytes], Any]] = {
    "json": load_json,
    "text": load_text,
    "bytes": load_bytes,
    "pickle": load_pickle,
}
_WRITERS: dict[str, Callable[[Any], bytes]] = {
    "json": write_json,
    "text": write_text,
    "bytes": write_bytes,
    "pickle": write_pickle,
}


def _codec(
    config: _Config, namespace: _Namespace, value: Any, path: str, builtin: Mapping[str, Callable[..., Any]]
) -> Callable[..., Any] | None:
    if value is None:
        return None
    if isinstance(value, str) and value in builtin:
        return builtin[value]
    expected = f"one of {', '.join(builtin)}, or the name of a function in the folder's modules"
    if not isinstance(value, str) or not value:
        raise config.expected(path, expected, value)
    if not namespace.defines(value):
        choices = [*builtin, *namespace._names(_FUNCTION, namespace.modules.values())]
        what = path.rpartition(".")[2]
        raise config.error(path, f"unknown {what} '{value}'{_did_you_mean(value, choices)}; expected {expected}")
    return namespace.lookup(value, path, _FUNCTION)
