"""Executors by name, so the CLI, the docs and the conformance suite read one list instead of three.

Each executor registers an :class:`ExecutorEntry` through the entry-point group
``crystallize.executors``; a third party adds one in its own ``pyproject.toml``::

    [project.entry-points."crystallize.executors"]
    dask = "my_package.crystallize_entry:DASK"

and ``crystallize run --executor dask`` and the conformance suite (``crystallize.testing``)
pick it up. When the package metadata is missing or stale (a source tree that was never
installed), the built-in entries are loaded directly, so they are always there.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CrystallizeError, ParameterError
from ..plugins.execution import AsyncExecution, ExecutionPlugin, ParallelExecution, SerialExecution

logger = logging.getLogger(__name__)

GROUP = "crystallize.executors"

# The entries this distribution declares (pyproject.toml), loaded directly when the metadata lacks them.
BUILTIN: dict[str, str] = {
    "serial": "crystallize.execution.registry:SERIAL",
    "thread": "crystallize.execution.registry:THREAD",
    "process": "crystallize.execution.registry:PROCESS",
    "asyncio": "crystallize.execution.registry:ASYNCIO",
    "ray": "crystallize_ray.entry:RAY",
}


class UnknownExecutorError(CrystallizeError, LookupError):
    """No executor is registered under the name asked for; the message lists the known ones."""


class ExecutorUnavailableError(CrystallizeError):
    """The executor is registered but a package it needs is not installed; the message says how to get it."""


class ExecutionFactory(Protocol):
    """Builds an execution plugin from the command-line options (None: not given) and plugin keywords."""

    def __call__(self, workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin: ...


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor by name: how to build its execution plugin, what it accepts, how it is tested.

    ``accepts``: which of the factory's ``workers``/``address`` mean something for it (the CLI
    refuses the others). ``conformance``: id -> a plugin for each configuration the
    conformance suite runs. ``needs``: modules it imports; when one is missing the entry
    still loads (so it is listed), but ``create`` raises with the ``install`` hint and the
    conformance suite skips it.
    """

    name: str
    factory: ExecutionFactory
    description: str
    accepts: frozenset[str] = frozenset()
    conformance: Mapping[str, Callable[[], ExecutionPlugin]] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    install: str | None = None

    def missing(self) -> list[str]:
        """The modules of ``needs`` that cannot be imported here."""
        return [module for module in self.needs if importlib.util.find_spec(module) is None]

    def unavailable_reason(self) -> str | None:
        """Why this executor cannot run here, as "needs ray, which is not installed: pip install ..." (None: it can)."""
        missing = self.missing()
        if not missing:
            return None
        hint = f": {self.install}" if self.install else ""
        return f"needs {', '.join(missing)}, which is not installed{hint}"

    def create(self, workers: int | None = None, address: str | None = None, **options: Any) -> ExecutionPlugin:
        """The execution plugin for these options; raises when an option does not apply or a package is missing."""
        for option, value in (("workers", workers), ("address", address)):
            if value is not None and option not in self.accepts:
                raise ParameterError(f"executor '{self.name}' takes no {option}")
        reason = self.unavailable_reason()
        if reason is not None:
            raise ExecutorUnavailableError(f"executor '{self.name}' {reason}")
        return self.factory(workers, address, **options)


# ---------------------------------------------------------------- the built-in executors


def _serial(workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin:
    return SerialExecution(**options)


def _thread(workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin:
    return ParallelExecution(executor_type="thread", max_workers=workers, **options)


def _process(workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin:
    return ParallelExecution(executor_type="process", max_workers=workers, **options)


def _asyncio(workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin:
    return AsyncExecution(**options)


def _serial_quiet() -> ExecutionPlugin:
    return SerialExecution(progress=False)


def _one_thread() -> ExecutionPlugin:
    return ParallelExecution(max_workers=1, executor_type="thread", progress=False)


def _two_processes() -> ExecutionPlugin:
    return ParallelExecution(max_workers=2, executor_type="process", progress=False)


def _asyncio_quiet() -> ExecutionPlugin:
    return AsyncExecution(progress=False)


WORKERS = frozenset({"workers"})

SERIAL = ExecutorEntry(
    "serial",
    _serial,
    "one replicate after another in this process (the default)",
    conformance={"serial": _serial_quiet},
)
# One thread: with more, steps drawing from the global generators are not reproducible (the run warns).
THREAD = ExecutorEntry(
    "thread",
    _thread,
    "a thread pool in this process (I/O-bound steps)",
    accepts=WORKERS,
    conformance={"thread1": _one_thread},
)
PROCESS = ExecutorEntry(
    "process",
    _process,
    "a pool of worker processes (CPU-bound steps)",
    accepts=WORKERS,
    conformance={"process": _two_processes},
)
ASYNCIO = ExecutorEntry(
    "asyncio",
    _asyncio,
    "coroutines on one event loop (async def steps)",
    conformance={"asyncio": _asyncio_quiet},
)


# ---------------------------------------------------------------- the registry


def _as_entry(name: str, loaded: object) -> ExecutorEntry:
    """An entry point names an ``ExecutorEntry`` (or a callable returning one); its name is the entry point's."""
    entry = loaded if isinstance(loaded, ExecutorEntry) or not callable(loaded) else loaded()
    if not isinstance(entry, ExecutorEntry):
        raise ParameterError(f"expected an ExecutorEntry, got {type(entry).__name__}")
    if entry.name != name:
        logger.warning("Entry point '%s' of %s names its executor '%s'; using '%s'", name, GROUP, entry.name, name)
        entry = dataclasses.replace(entry, name=name)
    return entry


def _import(value: str) -> object:
    module, _, attribute = value.partition(":")
    return getattr(importlib.import_module(module), attribute)


@functools.cache
def _load() -> dict[str, ExecutorEntry]:
    found: dict[str, ExecutorEntry] = {}
    for point in importlib.metadata.entry_points(group=GROUP):
        if point.name in found:
            logger.warning("Two entry points register the executor '%s'; keeping %s", point.name, found[point.name])
            continue
        try:
            found[point.name] = _as_entry(point.name, point.load())
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the others down
            logger.warning("Cannot load executor '%s' (%s): %s: %s", point.name, point.value, type(exc).__name__, exc)
    for name, value in BUILTIN.items():
        if name in found:
            continue
        logger.debug("No installed entry point for executor '%s'; loading %s directly", name, value)
        try:
            found[name] = _as_entry(name, _import(value))
        except ImportError as exc:  # crystallize_ray absent from this installation
            logger.debug("Built-in executor '%s' is not available: %s", name, exc)
    builtin = [name for name in BUILTIN if name in found]
    return {name: found[name] for name in [*builtin, *sorted(set(found) - set(builtin))]}


def registered() -> dict[str, ExecutorEntry]:
    """Every registered executor by name: the built-ins first, in their order, then the others by name."""
    return dict(_load())


def refresh() -> None:
    """Forget the loaded entries (after installing a package that registers one, in the same process)."""
    _load.cache_clear()


def get(name: str) -> ExecutorEntry:
    """The executor registered as ``name``; the error names the known ones and the closest match."""
    known = _load()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownExecutorError(f"unknown executor {name!r} (known: {', '.join(known)}){suggestion}")


def accepting(option: str) -> list[str]:
    """The executors that accept ``option`` (``"workers"``, ``"address"``), in registry order."""
    return [name for name, entry in _load().items() if option in entry.accepts]


def conformance_configurations() -> dict[str, tuple[ExecutorEntry, Callable[[], ExecutionPlugin]]]:
    """Every conformance configuration by id (``thread1``, ``process``, ...) with the entry it belongs to."""
    configurations: dict[str, tuple[ExecutorEntry, Callable[[], ExecutionPlugin]]] = {}
    for entry in _load().values():
        for config_id, make in entry.conformance.items():
            if config_id in configurations:
                logger.warning(
                    "Conformance configuration '%s' of executor '%s' is already taken by '%s'; skipping it",
                    config_id,
                    entry.name,
                    configurations[config_id][0].name,
                )
                continue
            configurations[config_id] = (entry, make)
    return configurations
