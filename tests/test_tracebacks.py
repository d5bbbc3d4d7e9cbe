"""format_exception / code_origins: worker tracebacks name the user's file, not "<dynamic-code>"."""

from __future__ import annotations

import importlib
import pickle
import sys
import textwrap
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import Any

import cloudpickle
import pytest

from crystallize.tracebacks import DYNAMIC_CODE_FILENAME, code_origins, format_exception

USER_SOURCE = """
import json


def validate_all(values):
    def validate(value):
        if value < 0:
            raise ValueError(f"negative value refused: {value}")
        return value

    return [validate(v) for v in values]


def reraise(values):
    try:
        return validate_all(values)
    except ValueError as exc:
        raise RuntimeError("validation failed") from exc


def through_lambda(values):
    check = lambda v: validate_all([v])  # noqa: E731
    return check(values[0])
"""

RAISE_LINE = 'raise ValueError(f"negative value refused: {value}")'


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A real module file, imported, whose functions cloudpickle ships by value."""
    name = f"tb_user_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(USER_SOURCE))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # removed again at teardown
    cloudpickle.register_pickle_by_value(module)
    yield module
    cloudpickle.unregister_pickle_by_value(module)


def _shipped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as the installed cloudpickle ships it by value (3.1+ renames its file, 2.x keeps it)."""
    copy = cloudpickle.loads(cloudpickle.dumps(fn))
    assert copy is not fn
    return copy


def _renamed(code: CodeType) -> CodeType:
    consts = tuple(_renamed(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=DYNAMIC_CODE_FILENAME, co_consts=consts)


def _by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A by-value copy whose code says ``<dynamic-code>`` whatever cloudpickle is installed.

    The mapping is ours to test on every cloudpickle we support; only
    ``test_by_value_traceback_names_the_users_file`` depends on what cloudpickle itself does.
    """
    copy = _shipped(fn)
    original_file = fn.__code__.co_filename  # type: ignore[attr-defined]
    copies = [copy, *(g for g in copy.__globals__.values() if isinstance(g, FunctionType))]  # type: ignore[attr-defined]
    for function in copies:
        if function.__code__.co_filename == original_file and function is not getattr(
            sys.modules[fn.__module__], function.__name__, None
        ):
            function.__code__ = _renamed(function.__code__)
    assert copy.__code__.co_filename == DYNAMIC_CODE_FILENAME  # type: ignore[attr-defined]
    return copy


def _raised(fn: Callable[..., Any], *args: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value


def _stdlib(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _line_of(path: str, text: str) -> int:
    lines = Path(path).read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def test_origins_name_the_real_file_of_nested_code(user_module: ModuleType) -> None:
    origins = code_origins([user_module.validate_all, user_module.through_lambda])
    names = {name for name, _line in origins}
    assert {"validate_all", "validate", "through_lambda", "<lambda>"} <= names
    assert set(origins.values()) == {user_module.__file__}
    assert pickle.loads(pickle.dumps(origins)) == origins  # plain data: ships with the work
    assert all(isinstance(k, tuple) and isinstance(k[0], str) and isinstance(k[1], int) for k in origins)


def test_by_value_traceback_names_the_users_file(user_module: ModuleType) -> None:
    origins = code_origins([user_module.validate_all])
    exc = _raised(_by_value(user_module.validate_all), [1, -2])
    path = str(user_module.__file__)
    stdlib = _stdlib(exc)
    assert path not in stdlib

    text = format_exception(exc, origins)
    line = _line_of(path, RAISE_LINE)
    assert f'File "{path}", line {line}, in validate' in text
    assert RAISE_LINE in text
    assert f'File "{path}", line {_line_of(path, "return [validate(v)")}' in text
    assert DYNAMIC_CODE_FILENAME not in text
    assert text.rstrip().endswith("ValueError: negative value refused: -2")
    # the same frames, only the file names and source lines differ from the stdlib's text
    assert text.count('  File "') == stdlib.count('  File "')


def test_code_shipped_by_the_installed_cloudpickle_names_the_users_file(user_module: ModuleType) -> None:
    """3.1+ renames shipped code to ``<dynamic-code>`` (mapped back); 2.x keeps the file (left alone)."""
    origins = code_origins([user_module.validate_all])
    exc = _raised(_shipped(user_module.validate_all), [-4])
    text = format_exception(exc, origins)
    path = str(user_module.__file__)
    assert f'File "{path}", line {_line_of(path, RAISE_LINE)}, in validate' in text
    assert RAISE_LINE in text
    assert DYNAMIC_CODE_FILENAME not in text


def test_chained_exceptions_are_rewritten_too(user_module: ModuleType) -> None:
    origins = code_origins([user_module.reraise])
    exc = _raised(_by_value(user_module.reraise), [-1])
    text = format_exception(exc, origins)
    assert "The above exception was the direct cause of the following exception:" in text
    assert RAISE_LINE in text
    assert 'raise RuntimeError("validation failed") from exc' in text
    assert DYNAMIC_CODE_FILENAME not in text
    assert text.index("ValueError: negative value refused") < text.index("RuntimeError: validation failed")


def test_lambdas_are_mapped(user_module: ModuleType) -> None:
    origins = code_origins([user_module.through_lambda])
    exc = _raised(_by_value(user_module.through_lambda), [-5])
    text = format_exception(exc, origins)
    assert "in <lambda>" in text
    assert "check = lambda v: validate_all([v])" in text
    assert DYNAMIC_CODE_FILENAME not in text


def test_unmapped_frames_format_like_the_stdlib(user_module: ModuleType) -> None:
    copy = _by_value(user_module.validate_all)
    exc = _raised(copy, [-3])
    assert format_exception(exc, {}) == _stdlib(exc)
    assert format_exception(exc, {("some_other_function", 1): "/nowhere.py"}) == _stdlib(exc)

    def local_failure() -> None:
        lookup: dict[str, int] = {}
        try:
            lookup["missing"]
        except KeyError:
            raise ValueError("while handling") from None

    plain = _raised(local_failure)
    assert format_exception(plain, code_origins([user_module.validate_all])) == _stdlib(plain)


def test_context_chain_matches_the_stdlib_when_nothing_is_dynamic() -> None:
    def failing() -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            raise KeyError("during handling")  # noqa: B904 - the implicit context is the point

    exc = _raised(failing)
    text = format_exception(exc, code_origins([failing]))
    assert "During handling of the above exception, another exception occurred:" in text
    assert text == _stdlib(exc)


def test_unreadable_file_still_gets_its_name(user_module: ModuleType) -> None:
    origins = code_origins([user_module.validate_all])
    exc = _raised(_by_value(user_module.validate_all), [-1])
    moved = {key: "/not/on/this/worker/user_code.py" for key in origins}
    text = format_exception(exc, moved)
    assert 'File "/not/on/this/worker/user_code.py", line' in text
    assert DYNAMIC_CODE_FILENAME not in text


def test_a_key_shared_by_two_files_is_dropped(tmp_path: Path) -> None:
    source = "def same():\n    return 1\n"
    functions = []
    for filename in ("/first/file.py", "/second/file.py"):
        namespace: dict[str, Any] = {}
        exec(compile(source, filename, "exec"), namespace)
        functions.append(namespace["same"])
    assert code_origins(functions[:1]) == {("same", 1): "/first/file.py"}
    assert code_origins(functions) == {}
