"""Where a run came from: the code's git state, library versions, the host, typed treatment values.

Captured once per run on the driver (workers need no ``.git``), and never allowed to fail a run:
no git binary, no repository, a hung ``git`` (a short timeout) all give ``None`` values.
Treatment values are stored JSON-typed (numbers stay numbers) so a stored run can be read back
as parameters; anything JSON cannot hold is kept as ``{"repr": ..., "type": ...}``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import inspect
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

from ._version import __version__
from .user_code import is_user_module

if TYPE_CHECKING:
    from .treatment import Treatment

logger = logging.getLogger(__name__)

GIT_TIMEOUT_SECONDS = 3.0
_LIBRARIES = ("numpy", "scipy", "pyarrow", "cloudpickle", "ray")


# ---------------------------------------------------------------- the code


_NO_GIT: dict[str, Any] = {"commit": None, "dirty": None, "root": None}


def git_state(directory: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``{"commit", "dirty", "root"}`` of the repository holding ``directory``; None values outside one.

    ``dirty`` means tracked files differ from the commit (``git status --porcelain
    --untracked-files=no``, as ``git describe --dirty`` judges it): untracked files do not count,
    or the run's own ``data/`` and ``.cache/`` folders inside the repository would mark every
    later run dirty.
    """
    return GitQuery(directory).result()


class GitQuery:
    """``git rev-parse`` and ``git status`` started now, read later: they run while the run does.

    Started from the calling thread (no helper thread: a process pool forking a worker then
    could inherit a half-made subprocess's pipes and hang it), with output to temporary
    files, not pipes, which a worker forked meanwhile would hold open.
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        where = os.fspath(directory) if directory is not None else os.getcwd()
        self._head = _start_git(where, "rev-parse", "--show-toplevel", "HEAD") if os.path.isdir(where) else None
        status = ("status", "--porcelain", "--untracked-files=no")
        self._status = _start_git(where, *status) if self._head is not None else None

    def result(self) -> dict[str, Any]:
        """The state; waits for git at most ``GIT_TIMEOUT_SECONDS`` per command (then None values)."""
        state = dict(_NO_GIT)
        head = _finish_git(self._head)
        status = _finish_git(self._status)
        self._head = self._status = None
        if head is None:
            return state
        returncode, lines = head
        if not lines or not os.path.isabs(lines[0]):
            return state  # not in a work tree (no repository, or a bare one)
        state["root"] = lines[0]
        if returncode == 0 and len(lines) >= 2:
            state["commit"] = lines[1]  # a repository without commits has no HEAD: commit stays None
        if status is not None and status[0] == 0:
            state["dirty"] = bool(status[1])
        return state


_Started = tuple[subprocess.Popen[bytes], IO[bytes]]


def _start_git(directory: str, *args: str) -> _Started | None:
    """``git -C directory args`` started, or None when git cannot run (no binary, a bad path)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status must not take the user's index lock
    output = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen(
            ["git", "-C", directory, *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        output.close()
        logger.debug("git %s in %s: %s", " ".join(args), directory, exc)
        return None
    return process, output


def _finish_git(started: _Started | None) -> tuple[int, list[str]] | None:
    """(return code, non-empty output lines) of a started git, or None when it failed to finish in time."""
    if started is None:
        return None
    process, output = started
    with output:
        try:
            returncode = process.wait(timeout=GIT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.debug("git did not answer within %.1f s: %s", GIT_TIMEOUT_SECONDS, process.args)
            process.kill()
            process.wait()
            return None
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    return returncode, [line for line in text.splitlines() if line.strip()]


def code_directory(parts: Iterable[Any]) -> str:
    """The folder of the experiment's own code: of the first step (or datasource) written by the user,
    else of the main script, else the working directory."""
    for part in parts:
        file = _source_file(part)
        if file is not None:
            return os.path.dirname(os.path.abspath(file))
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main, str) and os.path.isfile(main):
        return os.path.dirname(os.path.abspath(main))
    return os.getcwd()


def _source_file(part: Any) -> str | None:
    """The file of a step's (or datasource's) user-written code: its function's, else its class's methods'.

    Read from the code objects, not ``sys.modules``: ``crystallize run script.py`` runs the
    script under a module name that is gone once it has run.
    """
    fn = inspect.unwrap(getattr(part, "fn", None) or (lambda: None))
    candidates = [fn] if getattr(part, "fn", None) is not None else []
    candidates += [v for v in vars(type(part)).values() if inspect.isfunction(v)]
    for target in candidates:
        code = getattr(target, "__code__", None)
        file = getattr(code, "co_filename", None)
        if not isinstance(file, str) or not os.path.isfile(file):
            continue  # exec'd or notebook code: no file to ask git about
        if is_user_module(getattr(target, "__module__", None)):
            return file
    return None


# ---------------------------------------------------------------- the environment


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Versions of Python, the libraries results depend on, and crystallize; None for one not installed.

    Read from package metadata, so Ray is never imported just to learn its version.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["crystallize"] = __version__
    return dict(versions)


@functools.lru_cache(maxsize=1)
def host() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform()}


def environment(parts: Iterable[Any]) -> dict[str, Any]:
    """The ``git``, ``versions`` and ``host`` entries of a run's provenance."""
    return EnvironmentCapture(parts).result()


class EnvironmentCapture:
    """:func:`environment` begun as the run starts (git's state then is the code that runs) and
    read as it ends, so git's two subprocesses (about 10 ms) overlap the run instead of adding to it."""

    def __init__(self, parts: Iterable[Any]) -> None:
        self._git: GitQuery | None = None
        try:
            self._git = GitQuery(code_directory(parts))
        except Exception:  # provenance must never fail a run
            logger.debug("git state not captured", exc_info=True)

    def result(self) -> dict[str, Any]:
        git = dict(_NO_GIT)
        if self._git is not None:
            try:
                git = self._git.result()
            except Exception:  # provenance must never fail a run
                logger.debug("git state not captured", exc_info=True)
        return {"git": git, "versions": dict(library_versions()), "host": dict(host())}


# ---------------------------------------------------------------- treatment values


def typed_value(value: Any) -> Any:
    """``value`` as JSON can hold it with its type: bool, int, float, str, None, lists, str-keyed dicts.

    NumPy scalars become Python numbers and tuples lists; anything else is
    ``{"repr": repr(value), "type": "module.Class"}``.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, bool):  # subclasses (numpy.float64 is a float) as their plain type
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, (bool, int, float, str)):
            return item
    if isinstance(value, (list, tuple)):
        return [typed_value(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value) and set(value) != {"repr", "type"}:
        return {k: typed_value(v) for k, v in value.items()}
    kind = type(value)
    return {"repr": _short_repr(value), "type": f"{kind.__module__}.{kind.__qualname__}"}


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not fail the run record
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= 500 else text[:497] + "..."


def describe_treatment(treatment: Treatment | None) -> Any:
    """A mapping treatment's ``{key: typed value}``; a callable one's qualified name; None for the baseline."""
    if treatment is None:
        return None
    if treatment.is_mapping:
        return {k: typed_value(v) for k, v in treatment.apply_map.items()}
    return getattr(treatment._apply, "__qualname__", "callable")


def treatment_params(provenance: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{condition: {key: value}}`` of a result's mapping treatments, typed, whatever release stored them.

    Records older than typed values (no ``versions`` entry, every value a string) kept each value's
    repr: those are read back with ``ast.literal_eval`` where that works (``"-2.0"`` -> ``-2.0``), else as text.
    """
    stored = provenance.get("treatments")
    if isinstance(provenance.get("treatment_values"), Mapping):  # an interrupted run, known from its plan
        stored = provenance["treatment_values"]
    if not isinstance(stored, Mapping):
        return {}
    mappings = [values for values in stored.values() if isinstance(values, Mapping)]
    old = (
        "versions" not in provenance
        and "treatment_values" not in provenance
        and all(isinstance(v, str) for values in mappings for v in values.values())
    )
    out: dict[str, dict[str, Any]] = {}
    for name, values in stored.items():
        if isinstance(values, Mapping):
            out[str(name)] = {str(k): value_from_repr(v) if old else v for k, v in values.items()}
    return out


def treatment_functions(provenance: Mapping[str, Any]) -> dict[str, str]:
    """``{condition: qualified name}`` of a result's callable treatments."""
    stored = provenance.get("treatment_values")
    if not isinstance(stored, Mapping):  # a plan's "treatments" are fingerprints; a run record's are values
        stored = provenance.get("treatments") if "pipeline_fingerprint" in provenance else None
    if not isinstance(stored, Mapping):
        return {}
    return {str(name): value for name, value in stored.items() if isinstance(value, str)}


# NumPy 2 scalars' reprs, as older records hold them for values from np.linspace or np.arange grids
_NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool|str)_?\d*\((.+)\)")


def value_from_repr(value: Any) -> Any:
    """A value older records kept as its repr (``"-2.0"``, ``"'adam'"``, ``"np.float64(0.5)"``), read
    back typed; text that is no literal stays the text."""
    if not isinstance(value, str):
        return value
    if value in ("np.True_", "np.False_"):
        return value == "np.True_"
    numpy_scalar = _NUMPY_SCALAR.fullmatch(value)
    try:
        parsed = ast.literal_eval(numpy_scalar.group(1) if numpy_scalar else value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value
    return typed_value(parsed)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (True and 1 stay apart in a parameter column)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
