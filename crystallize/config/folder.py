"""Importing the ``*.py`` files of an experiment folder as the modules of a package private to it.

A private package per folder lets two folders both have a ``steps.py``, and lets the
modules of one folder import each other relatively. The modules are registered with
cloudpickle to travel by value, so process and Ray workers get their functions without
importing the folder.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
import types
from collections.abc import Sequence
from pathlib import Path

import cloudpickle

from ..errors import ValidationError

__all__ = ["import_folder", "package_name"]


def import_folder(
    folder: Path, config_file: Path, only: Sequence[str] | None = None
) -> tuple[str, dict[str, types.ModuleType]]:
    """The private package name of ``folder`` and its modules by file stem, freshly imported.

    ``only`` names the stems to import (the 0.27 format's fixed files); other files of the
    folder stay importable by them, but are not run (a ``main.py`` that loads the folder would
    load it again).
    """
    package = package_name(folder)
    _forget(package)  # a fresh import on every load: edits to the modules take effect
    importlib.invalidate_caches()  # files written a moment ago (tests, generated folders) must be found
    files = sorted(p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith("."))
    init = folder / "__init__.py"
    stems = [p.stem for p in files if p.name != "__init__.py"]
    if only is not None:
        stems = [stem for stem in stems if stem in only]
    try:
        cloudpickle.register_pickle_by_value(_import_root(folder, package, init))
    except Exception as exc:
        _forget(package)
        raise _import_error(init, "__init__", exc, folder, stems, config_file) from exc
    modules: dict[str, types.ModuleType] = {}
    for stem in stems:
        qualified = f"{package}.{stem}"
        try:
            # A sibling's relative import may have loaded it already in this pass: use that module.
            module = sys.modules.get(qualified) or importlib.import_module(qualified)
        except Exception as exc:
            _forget(package)
            raise _import_error(folder / f"{stem}.py", stem, exc, folder, stems, config_file) from exc
        cloudpickle.register_pickle_by_value(module)
        modules[stem] = module
    return package, modules


def _import_root(folder: Path, package: str, init: Path) -> types.ModuleType:
    """The package module: the folder's ``__init__.py`` if it has one, else an empty one."""
    if init.is_file():
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
        assert spec is not None and spec.loader is not None
        root = importlib.util.module_from_spec(spec)
        sys.modules[package] = root
        spec.loader.exec_module(root)
        return root
    root = types.ModuleType(package, f"modules of the experiment folder {folder}")
    root.__path__ = [str(folder)]
    root.__package__ = package
    sys.modules[package] = root
    return root


def package_name(folder: Path) -> str:
    """A package name unique to the folder's resolved path, readable in tracebacks."""
    resolved = str(folder.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    readable = re.sub(r"\W", "_", folder.resolve().name)[:40] or "folder"
    return f"crystallize_experiment_{readable}_{digest}"


def _forget(package: str) -> None:
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[loaded]


def _import_error(
    file: Path, stem: str, exc: BaseException, folder: Path, stems: Sequence[str], config_file: Path
) -> ValidationError:
    """The error of a module that failed to import, at the line of the folder's file that failed."""
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
        f"{location}: cannot import module '{stem}' of the experiment folder (for {config_file}): "
        f"{type(exc).__name__}: {exc}{hint}"
    )
