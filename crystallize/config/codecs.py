"""The loaders and writers a config names for its artifacts (``loader: json``).

Module-level functions, so they pickle by reference and workers need not receive them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..store import signed_pickle
from .namespace import FUNCTION, Namespace
from .yaml_source import YamlSource, did_you_mean

__all__ = [
    "LOADERS",
    "WRITERS",
    "codec",
    "load_bytes",
    "load_json",
    "load_pickle",
    "load_text",
    "write_bytes",
    "write_json",
    "write_pickle",
    "write_text",
]


def _content(data: bytes | os.PathLike[str]) -> bytes:
    """Loaders are given the artifact's file (a ``Path``, as in 0.27); bytes are accepted too."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return Path(data).read_bytes()


def load_json(data: bytes | os.PathLike[str]) -> Any:
    return json.loads(_content(data))


def load_text(data: bytes | os.PathLike[str]) -> str:
    return _content(data).decode("utf-8")


def load_bytes(data: bytes | os.PathLike[str]) -> bytes:
    return _content(data)


def load_pickle(data: bytes | os.PathLike[str]) -> Any:
    """A pickle the ``pickle`` writer made with this user's (or team's) key; anything else is refused."""
    where = f"artifact file {os.fspath(data)}" if not isinstance(data, (bytes, bytearray, memoryview)) else None
    return signed_pickle.loads(_content(data), what=where or "a pickled artifact")


def write_json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def write_text(value: Any) -> bytes:
    return str(value).encode("utf-8")


def write_bytes(value: Any) -> bytes:
    return bytes(value)


def write_pickle(value: Any) -> bytes:
    """Pickled and signed (see :mod:`crystallize.store.signed_pickle`)."""
    return signed_pickle.dumps(value)


LOADERS: dict[str, Callable[[Any], Any]] = {
    "json": load_json,
    "text": load_text,
    "bytes": load_bytes,
    "pickle": load_pickle,
}
WRITERS: dict[str, Callable[[Any], bytes]] = {
    "json": write_json,
    "text": write_text,
    "bytes": write_bytes,
    "pickle": write_pickle,
}


def codec(
    config: YamlSource, namespace: Namespace, value: Any, path: str, builtin: Mapping[str, Callable[..., Any]]
) -> Callable[..., Any] | None:
    """The built-in codec ``value`` names, else the function of that name in the folder's modules."""
    if value is None:
        return None
    if isinstance(value, str) and value in builtin:
        return builtin[value]
    expected = f"one of {', '.join(builtin)}, or the name of a function in the folder's modules"
    if not isinstance(value, str) or not value:
        raise config.expected(path, expected, value)
    if not namespace.defines(value):
        choices = [*builtin, *namespace.names(FUNCTION, namespace.modules.values())]
        what = path.rpartition(".")[2]
        raise config.error(path, f"unknown {what} '{value}'{did_you_mean(value, choices)}; expected {expected}")
    return namespace.lookup(value, path, FUNCTION)
