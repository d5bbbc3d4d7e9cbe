"""Per-process resources (connections, models) that travel as their recipe, not their state."""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import FrozenContext

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


class ResourceFactory:
    """Builds a resource lazily, once per process, and pickles only the factory.

    Put one in the context or on a step instead of an open connection or a loaded
    model: a worker on another machine then builds its own copy on first use.
    """

    def __init__(self, factory: Callable[..., Any], *, key: str | None = None) -> None:
        self.factory = factory
        self.key = key or _default_key(factory)

    def __call__(self, ctx: FrozenContext | None = None) -> Any:
        cached = _CACHE.get(self.key, _MISSING)
        if cached is not _MISSING:
            return cached
        with _LOCK:
            if self.key not in _CACHE:
                _CACHE[self.key] = self._build(ctx)
            return _CACHE[self.key]

    def _build(self, ctx: FrozenContext | None) -> Any:
        # Whether it takes the context is read from its signature: a TypeError raised inside
        # the factory must not be mistaken for "takes no arguments" (and the factory run twice).
        try:
            takes_ctx = any(
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                for p in inspect.signature(self.factory).parameters.values()
            )
        except (TypeError, ValueError):  # a builtin without a signature: try with the context
            takes_ctx = True
        return self.factory(ctx) if takes_ctx else self.factory()

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory = state["factory"]
        self.key = state["key"]

    def __repr__(self) -> str:
        return f"ResourceFactory({self.key})"


_MISSING = object()


def _default_key(factory: Callable[..., Any]) -> str:
    """``module.qualname`` plus a digest of the code and closure, so two lambdas in one scope differ."""
    base = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', id(factory))}"
    code = getattr(factory, "__code__", None)
    if code is None:
        return base
    from .hashing import _feed, _feed_code

    hasher = hashlib.blake2b(digest_size=8)
    _feed_code(hasher, code)
    try:
        _feed(hasher, [cell.cell_contents for cell in getattr(factory, "__closure__", None) or ()])
    except Exception:  # noqa: BLE001 - an unhashable closure value: fall back to the code alone
        pass
    return f"{base}#{hasher.hexdigest()}"


def clear_resources() -> None:
    """Forget every built resource in this process (tests use it)."""
    with _LOCK:
        _CACHE.clear()
