"""Arrow arrays built from Python lists without going through ``pyarrow.array``.

``pyarrow.array`` asks pyarrow's pandas shim about every input, and the shim imports
pandas (about 0.6 s) the first time, if it is installed. Recording a run must not pay
that, so the record writers build their columns here, from NumPy buffers, which never
touches the shim. Only the types the records use are covered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SerializationError

_INT32_MAX = 2**31 - 1


def _pa() -> Any:
    import pyarrow as pa

    return pa


def _validity(values: Sequence[Any]) -> tuple[Any, int]:
    """The validity bitmap of ``values`` (None when nothing is null) and the null count."""
    nulls = sum(1 for value in values if value is None)
    if not nulls:
        return None, 0
    present = np.fromiter((value is not None for value in values), dtype=bool, count=len(values))
    return _pa().py_buffer(np.packbits(present, bitorder="little")), nulls


def strings(values: Sequence[str | None]) -> Any:
    """A ``string`` array of ``values`` (None for null)."""
    pa = _pa()
    validity, nulls = _validity(values)
    texts: Sequence[str] = [value or "" for value in values] if nulls else values  # type: ignore[assignment]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    data = "".join(texts).encode("utf-8")
    if len(data) != int(lengths.sum()):  # not all ASCII: byte lengths differ from character counts
        encoded = [text.encode("utf-8") for text in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        data = b"".join(encoded)
    if len(data) > _INT32_MAX:
        raise SerializationError("more than 2 GiB of text in one Arrow string column of a record")
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(texts), [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls
    )


def _numbers(values: Sequence[Any], arrow_type: Any, dtype: Any) -> Any:
    pa = _pa()
    validity, nulls = _validity(values)
    filled = [0 if value is None else value for value in values] if nulls else values
    array = np.asarray(filled, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(filled), [validity, pa.py_buffer(array)], null_count=nulls)


def int64s(values: Sequence[int | None]) -> Any:
    """An ``int64`` array (None for null)."""
    return _numbers(values, _pa().int64(), np.int64)


def float64s(values: Sequence[float | None]) -> Any:
    """A ``float64`` array (None for null); the values are stored bit for bit."""
    return _numbers(values, _pa().float64(), np.float64)


def bools(values: Sequence[bool]) -> Any:
    """A ``bool`` array without nulls."""
    pa = _pa()
    bits = np.packbits(np.fromiter(values, dtype=bool, count=len(values)), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)], null_count=0)


def lists(lengths: Sequence[int | None], child: Any, list_type: Any) -> Any:
    """A list array whose i-th entry holds the next ``lengths[i]`` items of ``child`` (None: a null entry)."""
    pa = _pa()
    validity, nulls = _validity(lengths)
    counts = np.fromiter((n or 0 for n in lengths), dtype=np.int64, count=len(lengths))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.Array.from_buffers(
        list_type, len(lengths), [validity, pa.py_buffer(offsets)], null_count=nulls, children=[child]
    )


def structs(children: Sequence[Any], struct_type: Any) -> Any:
    """A struct array (no null entries) of ``children``, one per field of ``struct_type``."""
    pa = _pa()
    length = len(children[0]) if children else 0
    return pa.Array.from_buffers(struct_type, length, [None], null_count=0, children=list(children))


def nulls(length: int, arrow_type: Any) -> Any:
    """``length`` nulls of ``arrow_type`` (the error columns of a part without failures)."""
    return _pa().nulls(length, arrow_type)
