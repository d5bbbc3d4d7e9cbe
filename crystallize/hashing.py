"""Stable content hashes: the same value gives the same digest in every process and on every machine.

Python's ``hash()`` is salted per process and pickle bytes depend on memo order and
protocol, so neither can key a cache that several workers share. Values are fed to
``hashlib.blake2b`` through a canonical, type-tagged encoding instead.
"""

from __future__ import annotations
import __future__

import contextlib
import dataclasses
import dis
import functools
import hashlib
import operator
import struct
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, cast

from .errors import CacheError
from .user_code import PYTHON_VERSION, is_user_module, module_token, package_token

# Older names, kept for callers that imported them from here.
_is_user_module = is_user_module
_package_token = package_token
_module_token = module_token

_DIGEST_SIZE = 20


class Hasher(Protocol):
    """What the canonical encoding writes to: a ``hashlib`` object, or a stand-in that only collects code."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


def stable_hash(*values: Any) -> str:
    """Hex digest of ``values`` under the canonical encoding."""
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for value in values:
        _feed(hasher, value)
    return hasher.hexdigest()


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """Digest of the code ``fn`` runs and of the user code and module-level values it reaches.

    Bytecode, not source: the digest does not depend on a readable file, on comments, or on
    where ``fn`` was defined (a module, ``__main__``, a notebook, cloudpickle by value).
    Transitive: helpers and constants of the user's own modules are walked, so editing one
    invalidates cached results; stdlib and installed packages (crystallize too) count by version.
    """
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    _tag(hasher, b"PY", PYTHON_VERSION.encode())  # bytecode differs across Python versions
    walker = _CodeWalker()
    with walker.active():
        walker.feed_callable(hasher, fn)
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
        walker = _active_walker()
        if walker is not None:  # a class held in a container a fingerprinted function reaches
            walker.feed_class(hasher, value)
        else:
            _tag(hasher, b"K", f"{value.__module__}.{value.__qualname__}".encode())
    elif isinstance(value, types.ModuleType):
        _tag(hasher, b"MD", module_token(value).encode())
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
    # NumPy declares the buffer protocol (``__buffer__``) to type checkers only for Python 3.12+
    hasher.update(memoryview(cast(Any, contiguous)).cast("B"))


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
    # Inside a fingerprint computation, share its walker so cycles through containers end.
    walker = _active_walker()
    if walker is None:
        _tag(hasher, b"FP", code_fingerprint(fn).encode())
    else:
        walker.feed_callable(hasher, fn)


def _feed_code(hasher: Any, code: types.CodeType) -> None:
    """Feed what a code object runs: never its file name, first line, line table or qualname."""
    _tag(hasher, b"CO", code.co_code)
    _tag(hasher, b"CN", code.co_name.encode())
    _feed(
        hasher,
        (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags & ~_FUTURE_FLAGS),
    )
    _feed(hasher, code.co_names)
    _feed(hasher, code.co_varnames)
    _feed(hasher, code.co_freevars)
    _feed(hasher, code.co_cellvars)
    _tag(hasher, b"CC", str(len(code.co_consts)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(hasher, const)
        else:
            _feed(hasher, const)


# --- the code walk behind code_fingerprint ---------------------------------------------------

# __future__ flags say how the code was compiled (a notebook inherits them from earlier cells),
# not what it does; any bytecode they change is hashed anyway.
_FUTURE_FLAGS = functools.reduce(
    operator.or_, (getattr(__future__, name).compiler_flag for name in __future__.all_feature_names), 0
)
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
# Class attributes that say where a class was defined rather than what it does.
_SKIPPED_CLASS_ATTRS = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
        "__slotnames__",  # a cache copyreg adds on first pickle or __getstate__
    }
)
_ROUTINE_TYPES = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_SCAN_DEPTH = 3
_SCAN_ITEMS = 1000

_ACTIVE = threading.local()
_CODE_NAMES: weakref.WeakKeyDictionary[types.CodeType, tuple[frozenset[str], frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


def reachable_code(functions: Iterable[Any]) -> list[types.CodeType]:
    """Every user code object ``code_fingerprint`` would walk from ``functions``, nested ones included.

    Used on the driver to remember where code that cloudpickle ships by value really lives.
    """
    walker = _CodeWalker(collect=True)
    with walker.active():
        for fn in functions:
            walker.feed_callable(_NULL_HASHER, fn)
    return walker.codes


class _NullHasher:
    """Stands in for a hasher when the walk only collects code objects."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        pass


_NULL_HASHER = _NullHasher()


def _active_walker() -> _CodeWalker | None:
    return getattr(_ACTIVE, "walker", None)


class _CodeWalker:
    """One walk over the code a callable reaches; remembers what it visited so cycles end."""

    def __init__(self, *, collect: bool = False) -> None:
        # key -> object: holding the object keeps its id from being reused during the walk
        self._seen: dict[Any, Any] = {}
        self.collect = collect
        self.codes: list[types.CodeType] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        previous = _active_walker()
        _ACTIVE.walker = self
        try:
            yield
        finally:
            _ACTIVE.walker = previous

    def _first_visit(self, key: Any, obj: Any) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = obj
        return True

    # -- entry points -------------------------------------------------------------------------

    def feed_callable(self, hasher: Hasher, obj: Callable[..., Any], *, strict: bool = True) -> None:
        """A function, method, class, library routine or callable instance."""
        obj = _strip_method(obj)
        if isinstance(obj, type):
            self.feed_class(hasher, obj)
            return
        # innermost first (what actually runs); wrapper layers after, so a user decorator counts too
        for layer in reversed(_unwrap_layers(obj)):
            self._feed_layer(hasher, layer, strict=strict)

    def feed_class(self, hasher: Hasher, cls: type) -> None:
        if not is_user_module(getattr(cls, "__module__", None)):
            self._feed_library(hasher, cls)
            return
        if not self._first_visit(("class", id(cls)), cls):
            _tag(hasher, b"KREF", cls.__qualname__.encode())
            return
        _tag(hasher, b"KL", cls.__qualname__.encode())
        _tag(hasher, b"KB", str(len(cls.__bases__)).encode())
        for base in cls.__bases__:
            self.feed_class(hasher, base)
        attrs = cls.__dict__
        for name in sorted(attrs):
            if name in _SKIPPED_CLASS_ATTRS:
                continue
            _tag(hasher, b"KA", name.encode())
            value = attrs[name]
            if isinstance(value, property):
                for accessor in (value.fget, value.fset, value.fdel):
                    if accessor is None:
                        _tag(hasher, b"N")
                    else:
                        self.feed_callable(hasher, accessor, strict=False)
            else:
                self._feed_reached(hasher, value, frozenset())

    # -- one layer of a callable ------------------------------------------------------------

    def _feed_layer(self, hasher: Any, obj: Any, *, strict: bool) -> None:
        if isinstance(obj, types.FunctionType):
            if is_user_module(_defining_module(obj)):
                self._feed_user_function(hasher, obj)
            else:
                self._feed_library(hasher, obj)
        elif isinstance(obj, type):
            self.feed_class(hasher, obj)
        elif _is_routine(obj) or (
            isinstance(_safe_getattr(obj, "__qualname__"), str) and not is_user_module(_module_name_of(obj))
        ):
            self._feed_library(hasher, obj)  # numpy dispatchers and ufuncs, cython functions, ...
        else:
            # a callable instance (a user class, functools.partial, ...): its class plus its state
            _tag(hasher, b"CI")
            self.feed_class(hasher, type(obj))
            if self.collect:
                self._scan(obj, _SCAN_DEPTH)
            elif strict:  # the callable itself: a state without a stable hash is an error, as in stable_hash
                _feed(hasher, obj)
            else:
                self._feed_value(hasher, obj)

    def _feed_user_function(self, hasher: Any, fn: types.FunctionType) -> None:
        if not self._first_visit(("fn", id(fn)), fn):
            _tag(hasher, b"FREF", fn.__name__.encode())
            return
        code = fn.__code__
        _tag(hasher, b"UF", fn.__name__.encode())
        if self.collect:
            _collect_code(code, self.codes)
        else:
            _feed_code(hasher, code)
        global_names, attr_names = _code_names(code)
        defaults = fn.__defaults__ or ()
        _tag(hasher, b"DF", str(len(defaults)).encode())
        for value in defaults:
            self._feed_reached(hasher, value, attr_names)
        kwdefaults = fn.__kwdefaults__ or {}
        _tag(hasher, b"KW", str(len(kwdefaults)).encode())
        for name in sorted(kwdefaults):
            _tag(hasher, b"K", name.encode())
            self._feed_reached(hasher, kwdefaults[name], attr_names)
        cells = fn.__closure__ or ()
        _tag(hasher, b"CL", str(len(cells)).encode())
        for cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: the variable is not bound yet
                _tag(hasher, b"EMPTY")
                continue
            self._feed_reached(hasher, value, attr_names)
        namespace = fn.__globals__
        for name in sorted(global_names):
            if name in namespace:  # names missing here are builtins (or NameErrors): ignored
                _tag(hasher, b"G", name.encode())
                self._feed_reached(hasher, namespace[name], attr_names)

    def _feed_library(self, hasher: Any, obj: Any) -> None:
        module = _defining_module(obj) if isinstance(obj, types.FunctionType) else _module_name_of(obj)
        qualname = _safe_getattr(obj, "__qualname__")
        if not isinstance(qualname, str):
            qualname = _safe_getattr(obj, "__name__")
        if not isinstance(qualname, str):
            qualname = type(obj).__qualname__
        _tag(hasher, b"LIB", f"{module}.{qualname}|{package_token(module or '')}".encode())

    # -- values reached through globals, closures, defaults and class attributes -------------

    def _feed_reached(self, hasher: Any, value: Any, attr_names: frozenset[str]) -> None:
        if isinstance(value, types.ModuleType):
            self._feed_module(hasher, value, attr_names)
        elif _is_function_like(value):
            self.feed_callable(hasher, value, strict=False)
        elif is_user_module(type(value).__module__):
            # an instance of a user class: calling its methods runs that class's code
            _tag(hasher, b"UI")
            self.feed_class(hasher, type(value))
            self._feed_value(hasher, value)
        else:
            self._feed_value(hasher, value)

    def _feed_module(self, hasher: Any, module: types.ModuleType, attr_names: frozenset[str]) -> None:
        name = getattr(module, "__name__", "") or ""
        if not is_user_module(name):
            _tag(hasher, b"LM", package_token(name).encode())
            return
        _tag(hasher, b"UM", name.encode())
        namespace = vars(module)
        for attr in sorted(attr_names):
            if attr not in namespace:
                continue
            _tag(hasher, b"MA", attr.encode())
            if self._first_visit(("attr", id(module), attr), module):
                self._feed_reached(hasher, namespace[attr], attr_names)
            else:
                _tag(hasher, b"MREF")

    def _feed_value(self, hasher: Any, value: Any) -> None:
        """By value; a value without a stable hash counts by its type, so the walk never fails."""
        if self.collect:
            self._scan(value, _SCAN_DEPTH)
            return
        sub = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        try:
            _feed(sub, value)
        except Exception:  # noqa: BLE001 - any module-level object may sit in a user's globals
            _tag(hasher, b"TY", _type_name(value).encode())
            return
        _tag(hasher, b"V", sub.digest())

    def _scan(self, value: Any, depth: int) -> None:
        """Collect mode: find functions and classes inside plain containers without hashing."""
        if _is_function_like(value):
            self.feed_callable(_NULL_HASHER, value, strict=False)
            return
        if depth <= 0:
            return
        items: Iterable[Any]
        if isinstance(value, Mapping):
            items = value.values()
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = value
        elif isinstance(value, functools.partial):
            items = (value.func, value.args, value.keywords)
        else:
            if is_user_module(type(value).__module__):
                self.feed_class(_NULL_HASHER, type(value))
            return
        for index, item in enumerate(items):
            if index >= _SCAN_ITEMS:
                break
            self._scan(item, depth - 1)


def _collect_code(code: types.CodeType, out: list[types.CodeType]) -> None:
    out.append(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _collect_code(const, out)


def _code_names(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """(global names the code tree reads or writes, every name in its co_names), cached per code."""
    cached = _CODE_NAMES.get(code)
    if cached is not None:
        return cached
    global_names: set[str] = set()
    attr_names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        attr_names.update(current.co_names)
        # the same rule cloudpickle uses to pick the globals it ships with a function by value
        global_names.update(ins.argval for ins in dis.get_instructions(current) if ins.opcode in _GLOBAL_OPS)
        stack.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    result = (frozenset(global_names), frozenset(attr_names))
    _CODE_NAMES[code] = result
    return result


def _strip_method(obj: Any) -> Any:
    if isinstance(obj, (types.MethodType, classmethod, staticmethod)):
        return obj.__func__
    return obj


def _unwrap_layers(obj: Any) -> list[Any]:
    """``[obj, obj.__wrapped__, ...]``: the chain ``functools.wraps`` leaves, cycle-safe."""
    layers = [obj]
    ids = {id(obj)}
    while len(layers) < 100:
        try:
            inner = vars(layers[-1]).get("__wrapped__")
        except TypeError:  # no __dict__: nothing wraps here
            break
        if inner is None or id(inner) in ids:
            break
        inner = _strip_method(inner)
        layers.append(inner)
        ids.add(id(inner))
    return layers


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - proxies and lazy objects may raise anything from __getattr__
        return None


def _is_routine(obj: Any) -> bool:
    return isinstance(obj, _ROUTINE_TYPES)


def _is_function_like(value: Any) -> bool:
    """Code to walk (or name by version) rather than data to hash by value."""
    if isinstance(value, (type, types.FunctionType, types.MethodType, classmethod, staticmethod, *_ROUTINE_TYPES)):
        return True
    if not callable(value):
        return False
    if isinstance(_safe_getattr(value, "__qualname__"), str):
        return True  # function-like library objects: numpy dispatchers, ufuncs, cython functions
    try:
        return "__wrapped__" in vars(value)
    except TypeError:
        return False


def _defining_module(fn: types.FunctionType) -> str | None:
    # __globals__ tells where the code lives even when functools.wraps copied another __module__
    name = fn.__globals__.get("__name__")
    return name if isinstance(name, str) else fn.__module__


def _module_name_of(obj: Any) -> str | None:
    module = _safe_getattr(obj, "__module__")
    if isinstance(module, str):
        return module
    owner = _safe_getattr(obj, "__self__")  # builtin bound methods: rng.normal, "".join
    if owner is not None and not isinstance(owner, types.ModuleType):
        return type(owner).__module__
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return type(obj).__module__


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
