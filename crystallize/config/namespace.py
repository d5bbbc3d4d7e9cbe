"""Looking up the names a config uses across the modules of its experiment folder.

A name must resolve to the right kind of object (a step, a verifier ...); when it does
not, the error lists the names of that kind the folder defines, so it can suggest one.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..datasource import DataSource
from ..decorators import VerifierCallable
from ..hypothesis import Hypothesis
from ..stats.verifiers import BUILTIN_VERIFIERS
from ..steps import PipelineStep
from ..treatment import Treatment
from .folder import import_folder
from .yaml_source import YamlSource, describe, did_you_mean

__all__ = [
    "FUNCTION",
    "HYPOTHESIS",
    "RANKER",
    "SOURCE",
    "STEP",
    "TREATMENT",
    "VERIFIER",
    "Kind",
    "Namespace",
    "is_verifier_factory",
    "what",
]


class Kind:
    """What a name in the config must resolve to (a step, a verifier ...)."""

    def __init__(
        self,
        label: str,
        expected: str,
        accepts: Callable[[Any], bool],
        hint: str = "",
        typical: Callable[[Any], bool] | None = None,
        builtins: Mapping[str, Any] | None = None,
    ) -> None:
        self.label = label
        self.expected = expected
        self.accepts = accepts
        self.hint = hint
        self.typical = typical  # when some names are of this narrower kind, only they are listed
        self.builtins = dict(builtins or {})  # names crystallize provides; the folder's own definition wins


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


def is_verifier_factory(obj: Any) -> bool:
    """A ``@verifier`` factory (it carries the decorated function)."""
    return callable(obj) and hasattr(obj, "verifier_function")


_DECORATE_HINT = " (a plain function must be decorated with @{decorator})"

SOURCE = Kind(
    "datasource",
    "a @data_source function or a DataSource class or instance",
    _is_source,
    _DECORATE_HINT.format(decorator="data_source"),
)
STEP = Kind(
    "step",
    "a @pipeline_step function or a PipelineStep class or instance",
    _is_step,
    _DECORATE_HINT.format(decorator="pipeline_step"),
)
VERIFIER = Kind(
    "verifier",
    "a @verifier function (or a function of baseline, treatment)",
    _is_plain_function,
    typical=lambda obj: isinstance(obj, VerifierCallable) or is_verifier_factory(obj),
    builtins=BUILTIN_VERIFIERS,
)
RANKER = Kind("ranker", "a function of the verifier's result returning a score", _is_plain_function)
TREATMENT = Kind(
    "treatment",
    "a @treatment or a function of the context",
    lambda obj: isinstance(obj, Treatment) or _is_plain_function(obj),
)
HYPOTHESIS = Kind("hypothesis", "a @hypothesis", lambda obj: isinstance(obj, Hypothesis))
FUNCTION = Kind("function", "a function", _is_plain_function)


class Namespace:
    """The modules of one experiment folder, imported under a package private to that folder."""

    def __init__(self, folder: Path, package: str, modules: dict[str, types.ModuleType], config: YamlSource) -> None:
        self.folder = folder
        self.package = package
        self.modules = modules
        self.config = config
        self.missing_file: str | None = None  # the one file names are looked up in, when the folder lacks it

    @classmethod
    def import_folder(cls, folder: Path, config: YamlSource, only: Sequence[str] | None = None) -> Namespace:
        package, modules = import_folder(folder, config.file, only)
        return cls(folder, package, modules, config)

    def lookup(self, ref: Any, path: str, kind: Kind) -> Any:
        """The object ``ref`` names across the folder's modules (``module.name`` picks one module)."""
        config = self.config
        if not isinstance(ref, str) or not ref:
            raise config.expected(path, f"the name of {kind.expected}", ref)
        stem, obj = self._find(ref, path, kind)
        if not kind.accepts(obj):
            hint = kind.hint if _is_plain_function(obj) else ""
            raise config.error(path, f"'{ref}' in {stem}.py is {what(obj)}, expected {kind.expected}{hint}")
        return obj

    def _find(self, ref: str, path: str, kind: Kind) -> tuple[str, Any]:
        """The one module defining ``ref`` and what it defines; missing or ambiguous names are errors."""
        config = self.config
        module_name, dot, attr = ref.partition(".")
        if dot and module_name in self.modules:
            module = self.modules[module_name]
            if not hasattr(module, attr):
                raise config.error(
                    path,
                    f"module {module_name}.py has no '{attr}'"
                    f"{did_you_mean(attr, self.names(kind, [module]))}; expected {kind.expected}",
                )
            found = {module_name: getattr(module, attr)}
        else:
            found = {stem: vars(module)[ref] for stem, module in self.modules.items() if ref in vars(module)}
        if not found and ref in kind.builtins:
            return "crystallize", kind.builtins[ref]
        if not found:
            candidates = self.names(kind, self.modules.values())
            listing = f"; {kind.label}s defined here: {', '.join(candidates)}" if candidates else ""
            if kind.builtins:
                listing += f"; built in: {', '.join(sorted(kind.builtins))}"
            suggestion = did_you_mean(ref, [*candidates, *sorted(kind.builtins)])
            raise config.error(
                path,
                f"no {kind.label} named '{ref}' in {self._where()}{suggestion}; expected {kind.expected}{listing}",
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
        return next(iter(found.items()))

    def names(self, kind: Kind, modules: Iterable[types.ModuleType]) -> list[str]:
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
        if self.missing_file is not None and not self.modules:
            return f"{self.folder / self.missing_file} (no such file)"
        files = [f"{stem}.py" for stem in self.modules]
        if not files:
            return f"{self.folder} (it has no Python modules)"
        return ", ".join(files)


def _defined_here(obj: Any, package: str) -> bool:
    module = getattr(obj, "__module__", None)
    if module is None and not isinstance(obj, type):
        module = getattr(type(obj), "__module__", None)
    if isinstance(obj, (Treatment, Hypothesis, VerifierCallable)):
        return True  # instances made by decorators: their class lives in crystallize, the object here
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def what(obj: Any) -> str:
    """What an object is, in the words of an error message."""
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
        return describe(obj)
    return f"an object of type {type(obj).__name__}"
