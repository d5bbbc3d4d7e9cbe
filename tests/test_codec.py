"""Cache entry encoding: values come back equal, of the same type, and tampering is detected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crystallize.store.codec import CacheEntry, CorruptEntry, decode, encode, encode_parts


@pytest.mark.parametrize(
    "value",
    [
        np.arange(4, dtype=">f8"),  # big-endian: Arrow tensors would reinterpret the bytes
        np.matrix([[1, 2], [3, 4]]),  # a subclass: must not come back as a plain ndarray
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.array([True, False]),
    ],
    ids=["big-endian", "matrix", "fortran", "int16", "bool"],
)
def test_arrays_round_trip_with_type_dtype_and_values(value: np.ndarray) -> None:
    out = decode(encode(CacheEntry(value))).data
    assert type(out) is type(value)
    assert out.dtype == value.dtype
    assert np.array_equal(out, value)


def test_a_cached_array_is_writable_like_a_fresh_one() -> None:
    out = decode(encode(CacheEntry(np.zeros(3)))).data
    out += 1
    assert out.tolist() == [1.0, 1.0, 1.0]


def test_tables_and_frames_use_arrow_and_round_trip() -> None:
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=[10, 20])
    assert decode(encode(CacheEntry(table))).data.equals(table)
    pd.testing.assert_frame_equal(decode(encode(CacheEntry(frame))).data, frame)
    header = encode(CacheEntry(table))[:400]
    assert b'"arrow-table"' in header


def test_parts_join_to_the_same_bytes_as_encode() -> None:
    entry = CacheEntry(np.arange(10.0), {"m": [1.0]}, [("a.txt", b"abc")])
    assert b"".join(bytes(p) for p in encode_parts(entry, b"k")) == encode(entry, b"k")


def test_signed_entry_is_rejected_under_another_key_and_unsigned_under_any_key() -> None:
    blob = encode(CacheEntry({"v": 1}), b"key-one")
    assert decode(blob, b"key-one").data == {"v": 1}
    with pytest.raises(CorruptEntry, match="signature"):
        decode(blob, b"key-two")
    with pytest.raises(CorruptEntry, match="signature"):
        decode(encode(CacheEntry({"v": 1})), b"key-one")
