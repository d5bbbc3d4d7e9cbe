"""Binding a user function's parameters: explicit values, then the context, then defaults.

Steps and datasources are written as plain functions; this module decides which
parameter is the data, which is the context, and where every other value comes from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ParameterError
from .resources import ResourceFactory

if TYPE_CHECKING:
    from .context import FrozenContext

_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class CallSignature:
    """What a function expects: a data slot, a context slot, and injectable parameters."""

    qualname: str
    data_param: str | None
    ctx_param: str | None
    injectable: tuple[str, ...]
    defaults: Mapping[str, Any]
    is_async: bool
    # With nothing to inject: the data ("d") and context ("c") parameters as the function's leading
    # positional ones, in order ("dc", "c", ...), so the call needs no keyword dict; None otherwise.
    positional_order: str | None = None

    @classmethod
    def of(cls, fn: Callable[..., Any], *, takes_data: bool) -> CallSignature:
        signature = inspect.signature(fn)
        data_param = ctx_param = None
        injectable: list[str] = []
        defaults: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if ctx_param is None and _is_ctx_param(param):
                ctx_param = param.name
            elif (
                takes_data
                and data_param is None
                and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
                and not injectable
            ):
                data_param = param.name
            else:
                injectable.append(param.name)
                if param.default is not _EMPTY:
                    defaults[param.name] = param.default
        order = None
        if not injectable:
            try:  # the callable's own parameters: a decorator's wrapper may take keywords only
                order = _positional_order(inspect.signature(fn, follow_wrapped=False), data_param, ctx_param)
            except (TypeError, ValueError):
                order = None
        return cls(
            positional_order=order,
            qualname=getattr(fn, "__qualname__", repr(fn)),
            data_param=data_param,
            ctx_param=ctx_param,
            injectable=tuple(injectable),
            defaults=defaults,
            is_async=inspect.iscoroutinefunction(fn),
        )

    def check_explicit(self, explicit: Mapping[str, Any], owner: str) -> None:
        """Reject parameters the function does not have, naming them."""
        unknown = sorted(set(explicit) - set(self.injectable))
        if unknown:
            raise ParameterError(
                f"Unknown parameters: {', '.join(unknown)}: {owner}() got unexpected parameter(s) "
                f"{', '.join(map(repr, unknown))}; "
                f"it accepts {', '.join(map(repr, self.injectable)) or 'no parameters'}."
            )

    def resolve(self, explicit: Mapping[str, Any], ctx: FrozenContext | None, owner: object) -> dict[str, Any]:
        """Values for every injectable parameter; a missing one raises ``ParameterError`` (a TypeError) naming it.

        ``owner`` names the step or datasource in that error (``str(owner)``, formatted only then).
        """
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name in self.injectable:
            if name in explicit:
                values[name] = explicit[name]
            elif ctx is not None and name in ctx:
                values[name] = _built(ctx[name], ctx)
            elif name in self.defaults:
                values[name] = self.defaults[name]
            else:
                missing.append(name)
        if missing:
            raise ParameterError(
                f"{owner}: Missing parameters: {', '.join(missing)} (not passed, not found in the Context, "
                "and no default value); pass them when creating the step, add them to initial_ctx, "
                "or set them with a treatment."
            )
        return values

    def context_sourced(self, explicit: Mapping[str, Any], ctx: FrozenContext | None) -> dict[str, Any]:
        """The injected values that came from the context (they belong in a cache key)."""
        return {name: ctx[name] for name in self.injectable if name not in explicit and ctx is not None and name in ctx}

    def call(self, fn: Callable[..., Any], data: Any, ctx: FrozenContext | None, kwargs: dict[str, Any]) -> Any:
        order = self.positional_order
        if order is not None and not kwargs:
            if order == "dc":
                return fn(data, ctx)
            if order == "c":
                return fn(ctx)
            if order == "d":
                return fn(data)
            if order == "cd":
                return fn(ctx, data)
            return fn()
        if ctx is not None:
            for name, value in kwargs.items():
                bind = _binder(type(value))
                if bind is not None:  # an Artifact parameter: its copy bound to this replicate (write(value))
                    kwargs[name] = bind(value, ctx)
        if self.data_param is not None:
            kwargs[self.data_param] = data
        if self.ctx_param is not None:
            kwargs[self.ctx_param] = ctx
        return fn(**kwargs)


class OwnerLabel:
    """``step 'name'`` / ``datasource 'name'`` for an error message, formatted only when one is raised
    (building the text for every call cost more than the call of a no-op step)."""

    __slots__ = ("kind", "owner")

    def __init__(self, kind: str, owner: object) -> None:
        self.kind = kind
        self.owner = owner

    def __str__(self) -> str:
        return f"{self.kind} '{getattr(self.owner, 'name', self.kind)}'"


_NO_CTX: Any = object()
_BINDERS: dict[type, Any] = {}


def _binder(cls: type) -> Any:
    """``cls.__crystallize_bind__`` or None, looked up once per class (this runs for every step call)."""
    try:
        return _BINDERS[cls]
    except KeyError:
        found = _BINDERS[cls] = getattr(cls, "__crystallize_bind__", None)
        return found


def _built(value: Any, ctx: FrozenContext) -> Any:
    """A ``resource_factory`` found in the context is injected as the resource it builds, not as the factory."""
    return value(ctx) if isinstance(value, ResourceFactory) else value


def _positional_order(signature: inspect.Signature, data_param: str | None, ctx_param: str | None) -> str | None:
    """``CallSignature.positional_order``: the data/context slots when they are all the function takes, first."""
    order = ""
    for param in signature.parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return None  # *args, **kwargs or keyword-only: keep the keyword call
        if param.name == data_param:
            order += "d"
        elif param.name == ctx_param:
            order += "c"
        else:
            return None
    if ("d" in order) != (data_param is not None) or ("c" in order) != (ctx_param is not None):
        return None
    return order


def _is_ctx_param(param: inspect.Parameter) -> bool:
    if param.name in ("ctx", "context"):
        return True
    annotation = param.annotation
    if annotation is _EMPTY:
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return "FrozenContext" in str(text)


def inject_from_ctx(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for plain helpers called as ``fn(data, ctx)``: fills other parameters from ``ctx``."""
    signature = CallSignature.of(fn, takes_data=True)

    def wrapper(data: Any, ctx: Any = _NO_CTX, **explicit: Any) -> Any:
        from .context import FrozenContext

        if ctx is _NO_CTX:
            raise ParameterError(f"inject_from_ctx requires 'ctx' argument: call {signature.qualname}(data, ctx)")
        if not isinstance(ctx, FrozenContext):
            raise ParameterError(f"'ctx' must be a FrozenContext, got {type(ctx).__name__}")
        kwargs = signature.resolve(explicit, ctx, signature.qualname)
        return signature.call(fn, data, ctx, kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    wrapper.__qualname__ = getattr(fn, "__qualname__", "wrapper")
    return wrapper
