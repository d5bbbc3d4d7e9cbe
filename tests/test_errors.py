"""Every error Crystallize raises is a ``CrystallizeError``, and still the builtin a caller expects.

A static check reads every module of ``crystallize/`` and fails on a ``raise`` of a builtin
exception class outside the small allow-list below; behavioural checks raise a few
representative errors and catch them both ways (``except CrystallizeError`` and the builtin
that older code catches).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import crystallize
from crystallize import Experiment, Pipeline, Treatment, data_source, pipeline_step
from crystallize.errors import (
    ArtifactNotFoundError,
    CacheError,
    CorruptEntry,
    CorruptEntryError,
    CorruptRecordError,
    CrystallizeError,
    OptimizerError,
    ParameterError,
    RunNotFoundError,
    TargetError,
    ValidationError,
)

PACKAGE = Path(crystallize.__file__).resolve().parent

BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)

# (module path under crystallize/, qualified name of the function, exception) -> why it stays a builtin.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("context.py", "FrozenContext.__getitem__", "KeyError"): (
        "FrozenContext is a Mapping: a missing key must be a plain KeyError, as for a dict "
        "(a CrystallizeError there would also escape setup() unwrapped, see engine/driver.py)"
    ),
    ("store/filesystem.py", "Store.read_bytes", "FileNotFoundError"): (
        "the Store protocol: a missing object is FileNotFoundError, as pyarrow raises it on the common "
        "path and as the store conformance suite asks of every Store implementation"
    ),
    ("testing/__init__.py", "__getattr__", "AttributeError"): (
        "module-level lazy attributes: getattr()/hasattr() rely on AttributeError"
    ),
    ("plugins/execution.py", "ExecutionPlugin.create_executor", "NotImplementedError"): (
        "abstract-ish base method: subclasses override it"
    ),
    ("testing/executor_suite.py", "ExecutorConformance.make_execution", "NotImplementedError"): (
        "abstract-ish base method of the conformance suite: the executor's test subclass overrides it"
    ),
    ("testing/store_suite.py", "StoreConformance.store_root", "NotImplementedError"): (
        "abstract-ish fixture of the conformance suite: the store's test subclass overrides it"
    ),
    ("testing/steps.py", "must_not_run", "AssertionError"): (
        "a user step of the conformance suite: it stands for user code failing, not for Crystallize"
    ),
    ("testing/steps.py", "fragile_value", "RuntimeError"): (
        "a user step of the conformance suite that fails on purpose, as user code would"
    ),
}


def _builtin_raises() -> Iterator[tuple[str, str, str, int]]:
    """``(module path, qualified name, exception, line)`` for every ``raise <builtin>`` in crystallize/."""
    for file in sorted(PACKAGE.rglob("*.py")):
        module = file.relative_to(PACKAGE).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        yield from _walk(tree, module, [])


def _walk(node: ast.AST, module: str, scope: list[str]) -> Iterator[tuple[str, str, str, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _walk(child, module, [*scope, child.name])
            continue
        if isinstance(child, ast.Raise) and child.exc is not None:
            target = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
            if name in BUILTIN_EXCEPTIONS:
                yield module, ".".join(scope) or "<module>", name, child.lineno
        yield from _walk(child, module, scope)


def test_no_module_raises_a_builtin_exception_outside_the_allow_list() -> None:
    found = list(_builtin_raises())
    offending = [f"crystallize/{m}:{line} {q}: raise {e}" for m, q, e, line in found if (m, q, e) not in ALLOWED]
    assert not offending, (
        "raise a crystallize.errors class instead (one that also derives from the builtin callers catch):\n"
        + "\n".join(offending)
    )
    stale = sorted(set(ALLOWED) - {(m, q, e) for m, q, e, _ in found})
    assert not stale, f"allow-list entries that match no raise any more; remove them: {stale}"


def test_every_exception_class_of_the_package_is_a_crystallize_error() -> None:
    defined = []
    for info in pkgutil.walk_packages(crystallize.__path__, "crystallize."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                defined.append(value)
    assert CorruptEntry in defined and TargetError in defined  # the walk reached errors.py
    assert [cls for cls in defined if not issubclass(cls, CrystallizeError)] == []


# ------------------------------------------------------------------ caught both ways


@data_source
def numbers(ctx):
    return [1, 2, 3]


@pipeline_step
def add(data, ctx, *, delta):
    return [x + delta for x in data]


def _caught_as(error: BaseException, *types: type[BaseException]) -> None:
    assert isinstance(error, CrystallizeError), type(error).__mro__
    for expected in types:
        assert isinstance(error, expected), (expected, type(error).__mro__)


def test_a_bad_step_parameter_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected parameter") as info:
        add(detla=1)
    _caught_as(info.value, ParameterError, ValidationError)
    with pytest.raises(TypeError, match="keyword only") as info:
        add(1)
    _caught_as(info.value, ParameterError)


def test_bad_replicates_are_a_value_error() -> None:
    experiment = Experiment(datasource=numbers(), pipeline=Pipeline([add(delta=1)]), replicates=0)
    with pytest.raises(ValueError, match="replicates must be a positive integer") as info:
        experiment.validate()
    _caught_as(info.value, ValidationError)


def test_bad_treatment_and_optimizer_arguments_keep_their_builtins() -> None:
    from crystallize.optimizers import GridSearchOptimizer, Objective

    with pytest.raises(ValueError, match="non-empty name") as info:
        Treatment("")
    _caught_as(info.value, ValidationError)
    with pytest.raises(TypeError, match="apply must be a mapping") as info:
        Treatment("t", 3)  # type: ignore[arg-type]
    _caught_as(info.value, ParameterError)
    with pytest.raises(ValueError, match="direction") as info:
        Objective("m", direction="up")
    _caught_as(info.value, ValidationError)
    with pytest.raises(ValueError, match="batch_size") as info:
        GridSearchOptimizer({"x": [1]}, Objective("m"), batch_size=0)
    _caught_as(info.value, ValidationError)


def test_load_run_of_a_missing_folder_is_a_file_not_found_error(tmp_path: Path) -> None:
    from crystallize import load_run

    for missing in (tmp_path / "data" / "nothing", tmp_path / "data" / "nothing" / "v3"):
        with pytest.raises(FileNotFoundError, match="nothing") as info:
            load_run(missing)
        _caught_as(info.value, RunNotFoundError)


def test_an_unsafe_store_name_is_a_validation_error_and_a_value_error(tmp_path: Path) -> None:
    from crystallize.paths import check_segment
    from crystallize.store import Store

    store = Store(tmp_path / "root")
    for unsafe in ("../escape.txt", "a/../../escape.txt", "/etc/passwd", ""):
        for use in (store.full_path, store.read_bytes, lambda name: store.write_bytes(name, b"x")):
            with pytest.raises(ValueError) as info:
                use(unsafe)
            _caught_as(info.value, ValidationError)
    with pytest.raises(ValueError) as info:  # the same mistake, the same class, wherever it is caught
        check_segment("..", "experiment name")
    _caught_as(info.value, ValidationError)
    assert not (tmp_path / "escape.txt").exists()


def test_tell_without_ask_is_a_runtime_error() -> None:
    from crystallize.optimizers import GridSearchOptimizer, Objective

    optimizer = GridSearchOptimizer({"x": [1, 2]}, Objective("m"))
    with pytest.raises(RuntimeError, match=r"tell\(\) called without a preceding ask\(\)") as info:
        optimizer.tell({"m": 1.0})
    _caught_as(info.value, OptimizerError)
    with pytest.raises(RuntimeError, match="no trial has been scored") as info:
        optimizer.get_best_treatment()
    _caught_as(info.value, OptimizerError)


def test_a_corrupt_cache_entry_is_a_cache_error() -> None:
    from crystallize.store import codec

    assert codec.CorruptEntry is CorruptEntry is CorruptEntryError  # the old import path still works
    with pytest.raises(CacheError, match="bad magic") as info:
        codec.decode(b"not an entry at all")
    _caught_as(info.value, CorruptEntry, CorruptRecordError, ValueError)


def test_a_corrupt_outcome_record_is_a_corrupt_record_error() -> None:
    from crystallize.store.records import decode_part

    with pytest.raises(ValueError, match="truncated or altered") as info:
        decode_part(b"junk")
    _caught_as(info.value, CorruptRecordError)
    assert not isinstance(info.value, CacheError)


def test_a_cli_target_error_is_a_crystallize_error(tmp_path: Path) -> None:
    from crystallize.cli import targets

    assert targets.TargetError is TargetError  # the old import path still works
    with pytest.raises(CrystallizeError, match="no such file or folder") as info:
        targets.load_target(str(tmp_path / "missing.py"))
    _caught_as(info.value, TargetError)


def test_a_missing_artifact_is_a_file_not_found_error() -> None:
    assert issubclass(ArtifactNotFoundError, FileNotFoundError)
    assert issubclass(ArtifactNotFoundError, CrystallizeError)
    assert not issubclass(ArtifactNotFoundError, RunNotFoundError)  # the run is there; the file is not


def test_the_registry_errors_are_crystallize_errors() -> None:
    from crystallize.execution import registry

    with pytest.raises(LookupError, match="unknown executor") as info:
        registry.get("no-such-executor")
    _caught_as(info.value, registry.UnknownExecutorError)
    assert issubclass(registry.ExecutorUnavailableError, CrystallizeError)
    with pytest.raises(TypeError, match="takes no address") as info:
        registry.get("serial").create(address="ray://nowhere:1")
    _caught_as(info.value, ParameterError, ValueError)
