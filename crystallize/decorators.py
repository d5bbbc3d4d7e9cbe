"""The decorators users write experiments with."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .datasource import DataSource, FunctionSource
from .datasource_registry import register_definition
from .errors import ParameterError
from .hypothesis import Hypothesis, MetricSpec
from .injection import CallSignature
from .pipeline import Pipeline
from .resources import ResourceFactory
from .steps import FunctionStep, PipelineStep
from .treatment import Treatment

if TYPE_CHECKING:
    from .context import FrozenContext
    from .treatment import TreatmentApply


def pipeline_step(fn: Callable[..., Any] | None = None, *, cacheable: bool = False) -> Any:
    """Turn ``fn(data, ctx, *, params...)`` into a step factory: ``add_delta(delta=1)`` makes a step.

    Parameters not given to the factory come from the context at run time, else
    from their defaults.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., PipelineStep]:
        signature = CallSignature.of(func, takes_data=True)

        @functools.wraps(func)
        def factory(*args: Any, **explicit: Any) -> PipelineStep:
            if args:
                raise ParameterError(
                    f"{func.__name__}() takes parameters by keyword only (as in {func.__name__}(delta=1)); "
                    "the data and context are passed by the pipeline"
                )
            return FunctionStep(func, explicit, cacheable=cacheable, signature=signature)

        factory.step_function = func  # type: ignore[attr-defined]
        return factory

    if fn is not None:
        return decorate(fn)
    return decorate


def data_source(fn: Callable[..., Any] | str | None = None, *, register: bool = False) -> Any:
    """Turn ``fn(ctx, *, params...)`` into a datasource factory: ``numbers()`` makes a datasource.

    ``@data_source("name", register=True)`` (or ``@data_source(register=True)``, which uses the
    function's name) also registers ``factory()`` for ``get_datasource("name")``; parameters it
    was not given come from the context when it fetches. A name without ``register=True``
    registers nothing.
    """
    if not isinstance(register, bool):
        raise ParameterError(f"data_source(register=...) takes True or False, got {register!r}")
    name = fn if isinstance(fn, str) else None

    def decorate(func: Callable[..., Any]) -> Callable[..., DataSource]:
        if not callable(func):
            raise ParameterError(f"@data_source decorates a function, got {type(func).__name__}")

        @functools.wraps(func)
        def factory(*args: Any, **explicit: Any) -> DataSource:
            if args:
                raise ParameterError(f"{func.__name__}() takes parameters by keyword only")
            return FunctionSource(func, explicit)

        factory.source_function = func  # type: ignore[attr-defined]
        if register:
            register_definition(name or func.__name__, factory())
        return factory

    if fn is not None and name is None:
        return decorate(fn)  # type: ignore[arg-type]
    return decorate


def treatment(name: str, apply: TreatmentApply | None = None) -> Any:
    """``treatment("boost", {"delta": 10})`` makes a Treatment; ``@treatment("boost")`` decorates a ``fn(ctx)``."""
    if apply is not None:
        return Treatment(name, apply)

    def decorate(func: Callable[[FrozenContext], Any]) -> Treatment:
        return Treatment(name, func)

    return decorate


class VerifierCallable:
    """A verifier with its parameters bound; picklable when its function is."""

    def __init__(self, fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
        self.fn = fn
        self.params = dict(params)
        functools.update_wrapper(self, fn)

    def __call__(self, baseline: Mapping[str, Any], treatment: Mapping[str, Any]) -> Any:
        return self.fn(baseline, treatment, **self.params)

    def __repr__(self) -> str:
        return f"{getattr(self.fn, '__name__', 'verifier')}({self.params})"


def verifier(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``@verifier def test(baseline, treatment, alpha=0.05)``; ``test(alpha=0.01)`` binds parameters."""

    bindable, defaults, open_ended = _verifier_parameters(fn)

    @functools.wraps(fn)
    def factory(*args: Any, **params: Any) -> Any:
        if len(args) == 2:
            return fn(*args, **params)
        if args:
            raise ParameterError(f"{fn.__name__}() binds parameters by keyword, as in {fn.__name__}(alpha=0.01)")
        unknown = [] if open_ended else sorted(set(params) - set(bindable))
        if unknown:
            raise ParameterError(
                f"Unknown parameters: {', '.join(unknown)}: verifier {fn.__name__}() takes "
                f"{', '.join(map(repr, bindable)) or 'no parameters'} besides the baseline and treatment samples."
            )
        missing = [name for name in bindable if name not in params and name not in defaults]
        if missing:
            raise ParameterError(
                f"Missing parameters: {', '.join(missing)}: verifier {fn.__name__}() needs them, "
                f"as in {fn.__name__}({missing[0]}=...)."
            )
        return VerifierCallable(fn, params)

    factory.verifier_function = fn  # type: ignore[attr-defined]
    return factory


_SAMPLE_NAMES = frozenset({"baseline", "treatment", "baseline_samples", "treatment_samples"})


def _verifier_parameters(fn: Callable[..., Any]) -> tuple[list[str], dict[str, Any], bool]:
    """``(bindable names, their defaults, takes **kwargs)``: what a verifier factory may bind.

    The two sample parameters are the ones named like them, else the first two positional ones:
    they come from the run, never from the factory.
    """
    parameters = list(inspect.signature(fn).parameters.values())
    named = [p.name for p in parameters if p.name in _SAMPLE_NAMES]
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    samples = set(named) if len(named) >= 2 else set(positional[:2])
    bindable = [p.name for p in parameters if p.name not in samples and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    defaults = {p.name: p.default for p in parameters if p.name in bindable and p.default is not p.empty}
    return bindable, defaults, any(p.kind is p.VAR_KEYWORD for p in parameters)


def hypothesis(
    *,
    verifier: Callable[..., Any],
    metrics: MetricSpec = None,
    name: str | None = None,
    adjust: str = "holm",
) -> Callable[[Callable[[Any], float]], Hypothesis]:
    """``@hypothesis(verifier=..., metrics="total")`` on a ranker makes a Hypothesis (``adjust``: see Hypothesis)."""

    def decorate(ranker: Callable[[Any], float]) -> Hypothesis:
        return Hypothesis(
            verifier=verifier, metrics=metrics, ranker=ranker, name=name or ranker.__name__, adjust=adjust
        )

    return decorate


def resource_factory(fn: Callable[..., Any] | None = None, *, key: str | None = None) -> Any:
    """Wrap a builder of an unpicklable resource so each worker process builds its own."""
    if fn is not None:
        return ResourceFactory(fn, key=key)
    return lambda func: ResourceFactory(func, key=key)


def pipeline(*steps: PipelineStep) -> Pipeline:
    """``pipeline(a(), b())`` is ``Pipeline([a(), b()])``."""
    return Pipeline(list(steps))
