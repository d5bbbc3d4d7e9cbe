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


# --- code_fingerprint: what runs, transitively ---------------------------------------------------


def _import_fresh(root: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """Write ``files`` (module name -> source) under ``root`` and import them as real modules.

    Each version of a module tree lives in its own directory, so no stale bytecode is reused and
    the fingerprint is seen not to depend on the file path.
    """
    root.mkdir(parents=True)
    for name, source in files.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(root))
    for name in files:
        monkeypatch.setitem(sys.modules, name, None)  # teardown removes the module again
        del sys.modules[name]
    return {name: importlib.import_module(name) for name in files}


_HELPERS = """
    FACTOR = 3


    def double(x):
        return 2 * x


    def scale(x):
        return double(x) * FACTOR


    def unrelated():
        return "not called"
"""

_STEP = """
    import fpt_helpers
    from fpt_helpers import scale


    def step(data):
        return [scale(x) for x in data] + [fpt_helpers.double(1)]
"""


def _step_fingerprint(root: Path, monkeypatch: pytest.MonkeyPatch, helpers: str = _HELPERS) -> str:
    modules = _import_fresh(root, {"fpt_helpers": helpers, "fpt_step": _STEP}, monkeypatch)
    return code_fingerprint(modules["fpt_step"].step)


def test_fingerprint_does_not_depend_on_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same code imported from another directory, with its source file gone afterwards
    first = _step_fingerprint(tmp_path / "a", monkeypatch)
    second = _step_fingerprint(tmp_path / "b", monkeypatch)
    (tmp_path / "b" / "fpt_step.py").unlink()
    (tmp_path / "b" / "fpt_helpers.py").unlink()
    assert code_fingerprint(sys.modules["fpt_step"].step) == first == second


def test_editing_a_called_helper_changes_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _step_fingerprint(tmp_path / "v1", monkeypatch)
    edited = _HELPERS.replace("return double(x) * FACTOR", "return double(x) * FACTOR + 1")
    assert before != _step_fingerprint(tmp_path / "v2", monkeypatch, edited)


def test_editing_a_module_constant_changes_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _step_fingerprint(tmp_path / "v1", monkeypatch)
    assert before != _step_fingerprint(tmp_path / "v2", monkeypatch, _HELPERS.replace("FACTOR = 3", "FACTOR = 4"))


def test_editing_a_helper_of_a_helper_changes_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _step_fingerprint(tmp_path / "v1", monkeypatch)
    # double is reached both directly (fpt_helpers.double) and through scale: drop the direct call
    step = _STEP.replace(" + [fpt_helpers.double(1)]", "")
    one = _import_fresh(tmp_path / "v2", {"fpt_helpers": _HELPERS, "fpt_step": step}, monkeypatch)
    two_src = _HELPERS.replace("return 2 * x", "return 2 * x + 0.5")
    two = _import_fresh(tmp_path / "v3", {"fpt_helpers": two_src, "fpt_step": step}, monkeypatch)
    assert code_fingerprint(one["fpt_step"].step) != code_fingerprint(two["fpt_step"].step)
    assert before != code_fingerprint(one["fpt_step"].step)


def test_editing_an_unrelated_function_or_a_comment_keeps_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _step_fingerprint(tmp_path / "v1", monkeypatch)
    edited = _HELPERS.replace('return "not called"', 'return "edited, still not called"')
    edited = edited.replace("def double(x):", "# a comment moves every line below\n\n\n    def double(x):")
    assert before == _step_fingerprint(tmp_path / "v2", monkeypatch, edited)


def test_closure_values_and_defaults_count() -> None:
    def make(offset: int, default: int) -> object:
        def compute(x: int, y: int = default) -> int:
            return x + y + offset

        return compute

    assert code_fingerprint(make(1, 2)) == code_fingerprint(make(1, 2))
    assert code_fingerprint(make(1, 2)) != code_fingerprint(make(5, 2))
    assert code_fingerprint(make(1, 2)) != code_fingerprint(make(1, 7))


_RECURSIVE = """
    def is_even(n):
        return True if n == 0 else is_odd(n - 1)


    def is_odd(n):
        return False if n == 0 else is_even(n - 1)


    def countdown(n):
        return n if n <= 0 else countdown(n - 1)
"""


def test_mutual_and_self_recursion_terminate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _import_fresh(tmp_path / "v1", {"fpt_recursive": _RECURSIVE}, monkeypatch)["fpt_recursive"]
    digests = (code_fingerprint(first.is_even), code_fingerprint(first.is_odd), code_fingerprint(first.countdown))
    assert len(set(digests)) == 3
    edited = _RECURSIVE.replace("return False if n == 0", "return None if n == 0")
    second = _import_fresh(tmp_path / "v2", {"fpt_recursive": edited}, monkeypatch)["fpt_recursive"]
    assert code_fingerprint(second.is_even) != digests[0]  # is_odd, reached only through the cycle
    assert code_fingerprint(second.countdown) == digests[2]


_STANDALONE = """
    import math

    LIMIT = 10


    def clip(x):
        return min(x, LIMIT)


    def compute(values, power=2):
        squares = [clip(v) ** power for v in values]
        return math.fsum(squares)
"""


def test_same_code_in_a_module_main_or_exec_has_the_same_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import_fresh(tmp_path / "m", {"fpt_standalone": _STANDALONE}, monkeypatch)["fpt_standalone"]
    expected = code_fingerprint(module.compute)
    source = textwrap.dedent(_STANDALONE)
    for filename, name, padding in (("<ipython-input-3>", "__main__", "\n\n\n"), ("/elsewhere/cell.py", "cell", "")):
        namespace: dict[str, object] = {"__name__": name}
        # compile() inherits this file's `from __future__ import annotations`, as a notebook
        # cell inherits an earlier cell's: compiler flags must not count
        exec(compile(padding + source, filename, "exec"), namespace)
        fn = namespace["compute"]
        assert fn.__code__.co_filename == filename  # type: ignore[attr-defined]
        assert code_fingerprint(fn) == expected


def test_cloudpickle_by_value_copy_has_the_same_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    modules = _import_fresh(tmp_path / "m", {"fpt_helpers": _HELPERS, "fpt_step": _STEP}, monkeypatch)
    step = modules["fpt_step"].step
    cloudpickle.register_pickle_by_value(modules["fpt_step"])
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(step))
    finally:
        cloudpickle.unregister_pickle_by_value(modules["fpt_step"])
    assert copy is not step
    if copy.__code__.co_filename == step.__code__.co_filename:
        # cloudpickle 2.x keeps the file name; rename as 3.1+ does, so the case runs on every version
        copy.__code__ = copy.__code__.replace(co_filename="<dynamic-code>")
    assert copy.__code__.co_filename == "<dynamic-code>"
    assert code_fingerprint(copy) == code_fingerprint(step)


def _numpy_caller(function_name: str) -> object:
    namespace: dict[str, object] = {"np": np}
    exec(f"def reduce(values):\n    return np.{function_name}(values)\n", namespace)
    return namespace["reduce"]


def test_numpy_calls_count_by_name_and_version() -> None:
    from crystallize.hashing import _package_token

    digest = code_fingerprint(_numpy_caller("sum"))
    assert digest == code_fingerprint(_numpy_caller("sum"))
    assert digest != code_fingerprint(_numpy_caller("mean"))
    assert _package_token("numpy.linalg") == f"numpy=={np.__version__}"
    assert _package_token("json") == f"stdlib=={sys.version_info[0]}.{sys.version_info[1]}"


def test_user_module_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crystallize
    from crystallize.hashing import _is_user_module, _package_token

    module = _import_fresh(tmp_path / "m", {"fpt_standalone": _STANDALONE}, monkeypatch)["fpt_standalone"]
    assert _is_user_module(module.__name__)
    assert _is_user_module("__main__")
    assert _is_user_module(None)  # exec'd code without a module name
    assert _is_user_module("never_imported_by_value_module")  # shipped by value, not importable here
    assert _is_user_module(__name__)  # the project's own tests, outside site-packages
    for library in ("json", "os", "sys", "numpy", "numpy.linalg", "cloudpickle", "crystallize", "crystallize.steps"):
        assert not _is_user_module(library), library
    assert _package_token("crystallize.steps") == f"crystallize=={crystallize.__version__}"


def test_user_classes_reached_count_by_their_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
        class Model:
            SCALE = 2

            def predict(self, x):
                return x * self.SCALE


        MODEL = Model()


        def step(x):
            return Model().predict(x) + MODEL.predict(x)
    """
    first = _import_fresh(tmp_path / "v1", {"fpt_model": source}, monkeypatch)["fpt_model"]
    second = _import_fresh(tmp_path / "v2", {"fpt_model": source.replace("x * self", "x + self")}, monkeypatch)
    third = _import_fresh(tmp_path / "v3", {"fpt_model": source.replace("SCALE = 2", "SCALE = 3")}, monkeypatch)
    digests = {code_fingerprint(m.step) for m in (first, second["fpt_model"], third["fpt_model"])}
    assert len(digests) == 3


def test_wrapped_functions_count_the_function_they_wrap() -> None:
    import functools

    def decorate(fn: object) -> object:
        @functools.wraps(fn)  # type: ignore[arg-type]
        def wrapper(*args: object) -> object:
            return fn(*args)  # type: ignore[operator]

        return wrapper

    one = _exec_function("def compute(x):\n    return x + 1\n")
    two = _exec_function("def compute(x):\n    return x + 2\n")
    assert code_fingerprint(decorate(one)) == code_fingerprint(decorate(one))
    assert code_fingerprint(decorate(one)) != code_fingerprint(decorate(two))


def test_fingerprint_is_stable_after_running_and_with_unhashable_globals() -> None:
    namespace: dict[str, object] = {"LOCK": threading.Lock()}
    exec("def compute(x):\n    with LOCK:\n        return x * 2 + 1\n", namespace)
    compute = namespace["compute"]
    before = code_fingerprint(compute)
    for i in range(200):  # let the interpreter specialise the bytecode
        compute(i)  # type: ignore[operator]
    assert code_fingerprint(compute) == before


def test_callable_instances_count_class_and_state() -> None:
    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def __call__(self, x: int) -> int:
            return x * self.factor

    assert code_fingerprint(Scaler(2)) == code_fingerprint(Scaler(2))
    assert code_fingerprint(Scaler(2)) != code_fingerprint(Scaler(3))


def test_code_fingerprint_equal_in_a_fresh_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "m"
    modules = _import_fresh(root, {"fpt_helpers": _HELPERS, "fpt_step": _STEP}, monkeypatch)
    expected = code_fingerprint(modules["fpt_step"].step)
    code = "from crystallize.hashing import code_fingerprint; import fpt_step; print(code_fingerprint(fpt_step.step))"
    digests = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert digests == [expected, expected]
