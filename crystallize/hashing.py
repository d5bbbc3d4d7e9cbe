"""Stable content hashes: the same value gives the same digest in every process and on every machine.

Python's ``hash()`` is salted per process and pickle bytes depend on memo order and
protocol, so neither can key a cache that several workers share. Values are fed to
``hashlib.blake2b`` through a canonical, type-tagged encoding instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import struct
import types
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import CacheError

_DIGEST_SIZE = 20


def stable_hash(*values: Any) -> str:
    """Hex digest of ``values`` under the canonical encoding."""
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for value in values:
        _feed(hasher, value)
    return hasher.hexdigest()


def code_fingerprint(fn: Any) -> str:
    """Digest of a function's code: its source when available, else its bytecode."""
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    _feed_function(hasher, fn)
    return hasher.hexdigest()


def _tag(hasher: Any, tag: bytes, payload: bytes = b"") -> None:
    hasher.update(tag)
    hasher.update(struct.pack("<Q", len(payload)))
    hasher.update(payload)


def _feed(hasher: Any, value: Any) -> None:
    if value is None:
        _tag(hasher, b"N")
    elif value is True or value is False:
        _tag(hasher, b"B", b"1" if value else b"0")
    elif isinstance(value, int) and not _is_numpy(value):
        _tag(hasher, b"I", str(int(value)).encode())
    elif isinstance(value, float) and not _is_numpy(value):
        _tag(hasher, b"F", struct.pack("<d", value))
    elif isinstance(value, complex):
        _tag(hasher, b"C", struct.pack("<dd", value.real, value.imag))
    elif isinstance(value, str):
        _tag(hasher, b"S", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _tag(hasher, b"Y", bytes(value))
    elif isinstance(value, (list, tuple)):
        _tag(hasher, b"L" if isinstance(value, list) else b"T", str(len(value)).encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, Mapping):
        _feed_unordered(hasher, b"M", ((stable_hash(k), stable_hash(v)) for k, v in value.items()))
    elif isinstance(value, (set, frozenset)):
        _feed_unordered(hasher, b"E", ((stable_hash(item), "") for item in value))
    elif _is_numpy(value):
        _feed_numpy(hasher, value)
    elif _module_of(value).startswith("pandas"):
        _feed_pandas(hasher, value)
    elif _module_of(value).startswith("pyarrow"):
        _feed_arrow(hasher, value)
    elif isinstance(value, (types.FunctionType, types.MethodType)):
        _feed_function(hasher, value)
    elif isinstance(value, type):
        _tag(hasher, b"K", f"{value.__module__}.{value.__qualname__}".encode())
    elif hasattr(value, "__crystallize_hash__"):
        _tag(hasher, b"H", str(value.__crystallize_hash__()).encode())
    elif dataclasses.is_dataclass(value):
        _tag(hasher, b"D", _type_name(value).encode())
        for field in dataclasses.fields(value):
            _feed(hasher, field.name)
            _feed(hasher, getattr(value, field.name))
    else:
        _feed_object(hasher, value)


def _feed_unordered(hasher: Any, tag: bytes, pairs: Any) -> None:
    items = sorted(pairs)
    _tag(hasher, tag, str(len(items)).encode())
    for key_digest, value_digest in items:
        hasher.update(key_digest.encode())
        hasher.update(value_digest.encode())


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy"


def _module_of(value: Any) -> str:
    return type(value).__module__ or ""


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _feed_numpy(hasher: Any, value: Any) -> None:
    import numpy as np

    array = np.asarray(value)
    _tag(hasher, b"A", f"{array.dtype.str}|{array.shape}".encode())
    if array.dtype.hasobject:
        for item in array.ravel(order="C"):
            _feed(hasher, item)
        return
    contiguous = np.ascontiguousarray(array)
    hasher.update(memoryview(contiguous).cast("B"))


def _feed_pandas(hasher: Any, value: Any) -> None:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        _tag(hasher, b"PD", str(value.shape).encode())
        _feed(hasher, [str(c) for c in value.columns])
        _feed(hasher, value.index.to_numpy())
        for column in value.columns:
            _feed(hasher, str(value[column].dtype))
            _feed(hasher, value[column].to_numpy())
    elif isinstance(value, pd.Series):
        _tag(hasher, b"PS", str(value.name).encode())
        _feed(hasher, str(value.dtype))
        _feed(hasher, value.index.to_numpy())
        _feed(hasher, value.to_numpy())
    else:
        _feed_object(hasher, value)


def _feed_arrow(hasher: Any, value: Any) -> None:
    import pyarrow as pa

    if isinstance(value, pa.RecordBatch):
        value = pa.Table.from_batches([value])
    if isinstance(value, pa.Table):
        _tag(hasher, b"AT", str(value.schema).encode())
        for column in value.columns:
            for chunk in column.chunks:
                _feed_arrow_array(hasher, chunk)
    elif isinstance(value, (pa.Array, pa.ChunkedArray)):
        chunks = value.chunks if isinstance(value, pa.ChunkedArray) else [value]
        _tag(hasher, b"AA", str(value.type).encode())
        for chunk in chunks:
            _feed_arrow_array(hasher, chunk)
    else:
        _feed_object(hasher, value)


def _feed_arrow_array(hasher: Any, array: Any) -> None:
    # to_pylist is slow but exact for nested types; numeric arrays go through NumPy.
    try:
        _feed(hasher, array.to_numpy(zero_copy_only=False))
        _feed(hasher, array.null_count)
    except Exception:  # noqa: BLE001 - nested types have no NumPy view
        _feed(hasher, array.to_pylist())


def _feed_function(hasher: Any, fn: Any) -> None:
    fn = getattr(fn, "__func__", fn)
    fn = inspect.unwrap(fn)
    _tag(hasher, b"FN", f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = None
    if source is not None:
        _tag(hasher, b"SRC", source.encode())
        return
    code = getattr(fn, "__code__", None)
    if code is None:
        _feed_object(hasher, fn)
        return
    _feed_code(hasher, code)


def _feed_code(hasher: Any, code: types.CodeType) -> None:
    _tag(hasher, b"CO", code.co_code)
    _feed(hasher, code.co_names)
    _feed(hasher, code.co_varnames)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(hasher, const)
        else:
            _feed(hasher, const)


def _feed_object(hasher: Any, value: Any) -> None:
    cls = type(value)
    if cls.__reduce__ is not object.__reduce__ or cls.__reduce_ex__ is not object.__reduce_ex__:
        # Types with their own pickling (functools.partial, datetime, Decimal, ...) keep their
        # state outside __dict__; hash what they pickle, or two different values would collide.
        _feed_reduced(hasher, value)
        return
    state = None
    if hasattr(value, "__getstate__"):
        try:
            state = value.__getstate__()
        except TypeError:
            state = None
    if state is None and hasattr(value, "__dict__"):
        state = vars(value)
    if state is None and hasattr(value, "__slots__"):
        state = {name: getattr(value, name) for name in value.__slots__ if hasattr(value, name)}
    if state is None:
        raise CacheError(
            f"Cannot compute a stable hash for a value of type {_type_name(value)}. "
            "Give the type a __crystallize_hash__() method that returns a stable string, "
            "or make the step non-cacheable."
        )
    _tag(hasher, b"O", _type_name(value).encode())
    _feed(hasher, state)


def _feed_reduced(hasher: Any, value: Any) -> None:
    try:
        reduced = value.__reduce_ex__(4)
    except Exception as exc:
        raise CacheError(
            f"Cannot compute a stable hash for a value of type {_type_name(value)} ({exc}). "
            "Give the type a __crystallize_hash__() method that returns a stable string, "
            "or make the step non-cacheable."
        ) from exc
    _tag(hasher, b"R", _type_name(value).encode())
    if isinstance(reduced, str):  # a global reached by name (builtin functions)
        _feed(hasher, f"{getattr(value, '__module__', '')}.{reduced}")
        return
    rebuild, *parts = reduced
    _feed(hasher, f"{getattr(rebuild, '__module__', '')}.{getattr(rebuild, '__qualname__', _type_name(rebuild))}")
    for part in parts:
        _feed(hasher, list(part) if isinstance(part, Iterator) else part)
