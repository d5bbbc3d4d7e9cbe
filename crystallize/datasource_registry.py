"""Datasources by name, so code can use one without importing the module that defines it.

``@data_source("name", register=True)`` (or ``register_datasource``) puts a datasource
here; ``get_datasource("name")`` hands the same object back. The registry belongs to
the process: a worker process sees the names its own imports registered.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .errors import DatasourceNotFoundError, ParameterError, ValidationError

if TYPE_CHECKING:
    from .datasource import DataSource

__all__ = [
    "clear_registry",
    "get_datasource",
    "list_datasources",
    "register_datasource",
    "unregister_datasource",
]

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, DataSource] = {}
_BY_DECORATOR: set[str] = set()  # names whose entry @data_source(register=True) made
_LOCK = threading.Lock()


def register_datasource(name: str, datasource: DataSource) -> None:
    """Make ``datasource`` available as ``get_datasource(name)``; a name already taken is an error.

    Two modules must not silently shadow each other: call ``unregister_datasource(name)``
    first to replace an entry on purpose.
    """
    _register(name, datasource, redefinition_replaces=False)


def register_definition(name: str, datasource: DataSource) -> None:
    """What ``@data_source(name, register=True)`` calls: like :func:`register_datasource`, except
    that the same definition run again (a module or an experiment folder imported afresh, a
    notebook cell run twice) replaces the entry it made before instead of failing."""
    _register(name, datasource, redefinition_replaces=True)


def _register(name: str, datasource: DataSource, *, redefinition_replaces: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ParameterError(f"a datasource is registered under a non-empty string name, got {name!r}")
    if not callable(getattr(datasource, "fetch", None)):
        raise ParameterError(
            f"register_datasource({name!r}, ...) needs a DataSource (an object with fetch(ctx)), "
            f"got {type(datasource).__name__}; call the @data_source factory first, as in source()"
        )
    with _LOCK:
        current = _REGISTRY.get(name)
        if current is not None:
            redefined = redefinition_replaces and name in _BY_DECORATOR and _same_definition(current, datasource)
            if not redefined:
                raise ValidationError(
                    f"Datasource '{name}' is already registered "
                    f"(already registered as '{name}': {_describe(current)}); "
                    "choose another name, or call unregister_datasource(name) first to replace it."
                )
        _REGISTRY[name] = datasource
        if redefinition_replaces:
            _BY_DECORATOR.add(name)
        else:
            _BY_DECORATOR.discard(name)
    logger.debug("datasource '%s' registered (%s)", name, _describe(datasource))


def get_datasource(name: str) -> DataSource:
    """The datasource registered as ``name``; a ``KeyError`` (``DatasourceNotFoundError``) names the known ones."""
    with _LOCK:
        found = _REGISTRY.get(name)
        known = sorted(_REGISTRY)
    if found is None:
        raise DatasourceNotFoundError(
            f"No datasource registered with name '{name}'; registered: {known or 'none'}. "
            f"Register one with @data_source({name!r}, register=True) or register_datasource({name!r}, source)."
        )
    return found


def unregister_datasource(name: str) -> DataSource | None:
    """Remove ``name`` from the registry; returns what it held (None when it held nothing)."""
    with _LOCK:
        _BY_DECORATOR.discard(name)
        return _REGISTRY.pop(name, None)


def list_datasources() -> list[str]:
    """The registered names, in the order they were first registered."""
    with _LOCK:
        return list(_REGISTRY)


def clear_registry() -> None:
    """Forget every registered datasource (tests use it to start clean)."""
    with _LOCK:
        _REGISTRY.clear()
        _BY_DECORATOR.clear()


def _definition(datasource: Any) -> tuple[str, str, type] | None:
    """Where a datasource made by ``@data_source`` was defined: (module, qualified name, class)."""
    fn = getattr(datasource, "fn", None)
    if fn is None:
        return None
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname:
        return None
    return module, qualname, type(datasource)


def _same_definition(old: Any, new: Any) -> bool:
    """True when ``new`` is ``old`` defined again (a function of the same module and name, same parameters given)."""
    where = _definition(old)
    if where is None or where != _definition(new):
        return False
    try:
        return bool(getattr(old, "params", None) == getattr(new, "params", None))
    except Exception:  # noqa: BLE001 - parameters that cannot be compared are not the same
        return False


def _describe(datasource: Any) -> str:
    where = _definition(datasource)
    if where is not None:
        return f"{where[0]}.{where[1]}"
    return type(datasource).__qualname__
