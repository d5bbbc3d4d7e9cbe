"""stable_hash / code_fingerprint: canonical, type-aware and identical across processes."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import MappingProxyType, ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crystallize.errors import CacheError, CrystallizeError
from crystallize.hashing import code_fingerprint, stable_hash

# --- basic determinism -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 0, -7, 2**80, 1.5, float("inf"), 1 + 2j, "text", "", b"\x00bytes", [1, "a"], (1, 2), {"k": [1]}],
)
def test_same_value_same_digest(value: object) -> None:
    digest = stable_hash(value)
    assert digest == stable_hash(value)
    assert isinstance(digest, str) and len(digest) == 40
    int(digest, 16)  # hex


def test_equal_but_distinct_objects_hash_equal() -> None:
    assert stable_hash({"a": [1, 2, {"b": (3,)}]}) == stable_hash({"a": [1, 2, {"b": (3,)}]})
    assert stable_hash("x" * 1000) == stable_hash("".join(["x"] * 1000))


def test_different_values_differ() -> None:
    assert stable_hash(1) != stable_hash(2)
    assert stable_hash("a") != stable_hash("b")
    assert stable_hash([1, 2]) != stable_hash([2, 1])  # lists are ordered
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash({"a": 1}) != stable_hash({"b": 1})


def test_multiple_values_are_not_concatenated_ambiguously() -> None:
    assert stable_hash("ab", "c") != stable_hash("a", "bc")
    assert stable_hash(["a"], "b") != stable_hash(["a", "b"])
    assert stable_hash("a", "b") == stable_hash("a", "b")


def test_dict_order_does_not_matter() -> None:
    a = {"x": 1, "y": 2, "z": [3]}
    b = {"z": [3], "y": 2, "x": 1}
    assert list(a) != list(b)
    assert stable_hash(a) == stable_hash(b)
    assert stable_hash(MappingProxyType(a)) == stable_hash(b)


def test_set_order_does_not_matter() -> None:
    words = [f"w{i}" for i in range(50)]
    forward, backward = set(), set()
    for w in words:
        forward.add(w)
    for w in reversed(words):
        backward.add(w)
    assert stable_hash(forward) == stable_hash(backward)
    assert stable_hash(frozenset(words)) == stable_hash(frozenset(reversed(words)))
    assert stable_hash({1, 2}) != stable_hash({1, 3})


def test_list_and_tuple_differ() -> None:
    assert stable_hash([1, 2]) != stable_hash((1, 2))
    assert stable_hash([]) != stable_hash(())


def test_int_float_bool_differ() -> None:
    digests = {stable_hash(1), stable_hash(1.0), stable_hash(True)}
    assert len(digests) == 3
    assert len({stable_hash(0), stable_hash(0.0), stable_hash(False), stable_hash(None)}) == 4


def test_str_and_bytes_differ() -> None:
    assert stable_hash("abc") != stable_hash(b"abc")
    assert stable_hash("1") != stable_hash(1)


def test_set_and_list_differ() -> None:
    assert stable_hash({"a"}) != stable_hash(["a"])
    assert stable_hash({"a": ""}) != stable_hash({"a"})


# --- numpy ----------------------------------------------------------------------------


def test_numpy_same_array_same_digest() -> None:
    a = np.arange(10, dtype=np.int64)
    assert stable_hash(a) == stable_hash(a.copy())
    b = a.copy()
    b[3] = 99
    assert stable_hash(a) != stable_hash(b)


def test_numpy_same_bytes_different_dtype_differ() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.int32)
    b = a.view(np.float32)
    assert a.tobytes() == b.tobytes()
    assert stable_hash(a) != stable_hash(b)
    c = a.view(np.uint32)
    assert stable_hash(a) != stable_hash(c)


def test_numpy_same_bytes_different_shape_differ() -> None:
    a = np.arange(6, dtype=np.int64)
    b = a.reshape(2, 3)
    c = a.reshape(3, 2)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    assert len({stable_hash(a), stable_hash(b), stable_hash(c)}) == 3


def test_non_contiguous_array_hashes_like_contiguous_copy() -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    strided = base[:, ::2]
    assert not strided.flags.c_contiguous
    assert stable_hash(strided) == stable_hash(np.ascontiguousarray(strided))
    transposed = base.T
    assert not transposed.flags.c_contiguous
    assert stable_hash(transposed) == stable_hash(transposed.copy(order="C"))
    assert stable_hash(transposed) != stable_hash(base)


def test_numpy_object_array_and_scalars() -> None:
    objs = np.array(["a", 1, None], dtype=object)
    assert stable_hash(objs) == stable_hash(np.array(["a", 1, None], dtype=object))
    assert stable_hash(objs) != stable_hash(np.array(["a", 2, None], dtype=object))
    assert stable_hash(np.float64(1.5)) == stable_hash(np.float64(1.5))
    assert stable_hash(np.float32(1.5)) != stable_hash(np.float64(1.5))


# --- pandas / pyarrow ---------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.5, 1.5, 2.5]})


def test_pandas_dataframe_hash_is_deterministic() -> None:
    assert stable_hash(_frame()) == stable_hash(_frame())
    changed = _frame()
    changed.loc[1, "c"] = 9.0
    assert stable_hash(changed) != stable_hash(_frame())
    assert stable_hash(_frame().astype({"a": "int32"})) != stable_hash(_frame())
    assert stable_hash(_frame()[["b", "a", "c"]]) != stable_hash(_frame())


def test_pandas_series_hash_is_deterministic() -> None:
    s = pd.Series([1.0, 2.0], name="s")
    assert stable_hash(s) == stable_hash(pd.Series([1.0, 2.0], name="s"))
    assert stable_hash(s) != stable_hash(pd.Series([1.0, 2.0], name="t"))


def test_pyarrow_table_hash_is_deterministic() -> None:
    def table() -> pa.Table:
        return pa.table({"n": [1, 2, None], "s": ["a", "b", "c"], "nested": [[1], [2, 3], []]})

    assert stable_hash(table()) == stable_hash(table())
    other = pa.table({"n": [1, 2, 4], "s": ["a", "b", "c"], "nested": [[1], [2, 3], []]})
    assert stable_hash(other) != stable_hash(table())
    batch = pa.RecordBatch.from_pydict({"n": [1, 2]})
    assert stable_hash(batch) == stable_hash(pa.table({"n": [1, 2]}))
    assert stable_hash(pa.array([1, 2])) == stable_hash(pa.array([1, 2]))
    assert stable_hash(pa.array([1, 2])) != stable_hash(pa.array([1, 3]))


# --- objects -------------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Plain:
    def __init__(self, value: object) -> None:
        self.value = value


class Custom:
    def __crystallize_hash__(self) -> str:
        return "custom-v1"


def test_dataclass_and_plain_objects_hash_by_state() -> None:
    assert stable_hash(Point(1, 2)) == stable_hash(Point(1, 2))
    assert stable_hash(Point(1, 2)) != stable_hash(Point(2, 1))
    assert stable_hash(Plain([1])) == stable_hash(Plain([1]))
    assert stable_hash(Plain([1])) != stable_hash(Plain([2]))
    assert stable_hash(Custom()) == stable_hash(Custom())


def test_unhashable_state_raises_cache_error() -> None:
    with pytest.raises(CacheError) as info:
        stable_hash(threading.Lock())
    assert "lock" in str(info.value)
    assert isinstance(info.value, CrystallizeError)


def test_object_holding_a_lock_raises_cache_error() -> None:
    with pytest.raises(CacheError):
        stable_hash(Plain(threading.Lock()))
    with pytest.raises(CacheError):
        stable_hash({"fine": 1, "bad": [threading.Lock()]})


# --- across processes -----------------------------------------------------------------------

_VALUE_SRC = "{'alpha': 1, 'beta': 'two', 'gamma': [1.5, None]}, {'red', 'green', 'blue', 'cyan', 'magenta'}"


def test_digest_stable_across_processes_with_different_hash_seeds() -> None:
    expected = stable_hash(
        {"alpha": 1, "beta": "two", "gamma": [1.5, None]}, {"red", "green", "blue", "cyan", "magenta"}
    )
    code = f"from crystallize.hashing import stable_hash; print(stable_hash({_VALUE_SRC}))"
    set_repr = "print(list({'red', 'green', 'blue', 'cyan', 'magenta'}))"
    digests, orders = [], []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", f"{code}\n{set_repr}"], env=env, capture_output=True, text=True, check=True
        )
        digest, order = out.stdout.strip().splitlines()
        digests.append(digest)
        orders.append(order)
    # the seeds really change the set's iteration order, yet the digest does not move
    assert orders[0] != orders[1]
    assert digests == [expected, expected]


# --- code_fingerprint -------------------------------------------------------------------------


def sample_function(x: int) -> int:
    return x + 1


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_code_fingerprint_is_equal_for_the_same_function() -> None:
    assert code_fingerprint(sample_function) == code_fingerprint(sample_function)
    assert stable_hash(sample_function) == stable_hash(sample_function)


def test_code_fingerprint_changes_when_body_changes(tmp_path: Path) -> None:
    path = tmp_path / "fp_module.py"
    path.write_text("def compute(x):\n    return x + 1\n")
    before = code_fingerprint(_load_module(path, "fp_module").compute)
    again = code_fingerprint(_load_module(path, "fp_module").compute)
    path.write_text("def compute(x):\n    return x + 2  # edited\n")
    after = code_fingerprint(_load_module(path, "fp_module").compute)
    assert before == again
    assert before != after


def _exec_function(body: str) -> object:
    namespace: dict[str, object] = {}
    exec(textwrap.dedent(body), namespace)  # no source file: the bytecode path
    return namespace["compute"]


def test_code_fingerprint_without_source_uses_bytecode() -> None:
    one = _exec_function("def compute(x):\n    return x + 1\n")
    same = _exec_function("def compute(x):\n    return x + 1\n")
    two = _exec_function("def compute(x):\n    return x + 2\n")
    renamed_var = _exec_function("def compute(y):\n    return y + 1\n")
    assert code_fingerprint(one) == code_fingerprint(same)
    assert code_fingerprint(one) != code_fingerprint(two)
    assert code_fingerprint(one) != code_fingerprint(renamed_var)


def test_code_fingerprint_of_bound_method_is_that_of_function() -> None:
    class Holder:
        def method(self) -> int:
            return 1

    assert code_fingerprint(Holder().method) == code_fingerprint(Holder.method)
