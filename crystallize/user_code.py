"""Which code is the user's own, and what a library's code counts as.

Code fingerprints walk the user's own functions, classes and constants (an edit there must
invalidate cached results) but count libraries by their version (walking numpy on every run
would be slow and pointless). This module draws that line: the stdlib, site-packages and
crystallize itself are libraries; ``__main__``, exec'd code, notebook cells, code shipped by
value and files outside every library folder (an editable install of the user's project) are
the user's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import site
import sys
import sysconfig
import types
from collections.abc import Mapping

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
_FRAMEWORK_PACKAGES = frozenset({"crystallize", "crystallize_ray"})
_USER_MODULES: dict[tuple[str, str | None], bool] = {}
_PACKAGE_TOKENS: dict[str, str] = {}


def is_user_module(name: str | None) -> bool:
    """True for the user's own code (walked); False for stdlib, installed packages and crystallize.

    User code: ``__main__``, modules with no file that are not builtins (exec'd, notebook cells,
    code cloudpickle shipped by value), and modules whose file is outside the stdlib and
    site-packages directories (so an editable install of the user's project counts as theirs).
    """
    if not name or name == "__main__":
        return True
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None) if module is not None else None
    key = (name, file if isinstance(file, str) else None)
    cached = _USER_MODULES.get(key)
    if cached is not None:
        return cached
    result = _classify_module(name, module)
    if module is not None:
        _USER_MODULES[key] = result
    return result


def _classify_module(name: str, module: types.ModuleType | None) -> bool:
    top = name.partition(".")[0]
    if top in _FRAMEWORK_PACKAGES or name in sys.builtin_module_names:
        return False
    if module is None:
        # not importable here: the top package decides, else it is code shipped by value
        if top != name and top in sys.modules:
            return is_user_module(top)
        return top not in sys.stdlib_module_names and top not in sys.builtin_module_names
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        return not _under_library_root(file)
    spec = getattr(module, "__spec__", None)
    if getattr(spec, "origin", None) in ("frozen", "built-in"):
        return False
    paths = [p for p in (getattr(module, "__path__", None) or []) if isinstance(p, str)]
    if paths:  # a namespace package: library only if all its directories are
        return not all(_under_library_root(p) for p in paths)
    return True


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if paths.get(key)}
    with contextlib.suppress(AttributeError):  # old virtualenvs' site module lacks these
        roots.update(site.getsitepackages())
    with contextlib.suppress(AttributeError):
        roots.add(site.getusersitepackages())
    normalized = set()
    for root in roots:
        normalized.add(os.path.normcase(os.path.abspath(root)).rstrip(os.sep))
        normalized.add(os.path.normcase(os.path.realpath(root)).rstrip(os.sep))
    return tuple(sorted(root for root in normalized if root))


@functools.lru_cache(maxsize=4096)
def _under_library_root(path: str) -> bool:
    candidates = {os.path.normcase(os.path.abspath(path)), os.path.normcase(os.path.realpath(path))}
    return any(
        candidate == root or candidate.startswith(root + os.sep)
        for candidate in candidates
        for root in _library_roots()
    )


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # noqa: BLE001 - broken metadata must not break fingerprints
        return {}


def package_token(module_name: str) -> str:
    """``"<top-level package>==<version>"``: library code counts by its version, not its contents."""
    top = module_name.partition(".")[0]
    token = _PACKAGE_TOKENS.get(top)
    if token is not None:
        return token
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        token = f"stdlib=={PYTHON_VERSION}"
    else:
        versions = set()
        for dist in _distributions().get(top, ()):
            with contextlib.suppress(Exception):
                versions.add(importlib.metadata.version(dist))
        if not versions:
            version = getattr(sys.modules.get(top), "__version__", None)
            versions.add(version if isinstance(version, str) else "unknown")
        token = f"{top}=={','.join(sorted(versions))}"
    _PACKAGE_TOKENS[top] = token
    return token


def module_token(module: types.ModuleType) -> str:
    name = getattr(module, "__name__", "") or ""
    return f"user:{name}" if is_user_module(name) else package_token(name)
