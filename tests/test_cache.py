"""The step cache of ``@pipeline_step(cacheable=True)``: hits, what the key covers, and failure modes.

Real executions are counted in a file (``calls.log`` in the test's working folder)
because process workers cannot share memory with the test.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import crystallize.cache
import crystallize.engine.replicate
import crystallize.store.codec
from crystallize import (
    Experiment,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    data_source,
    pipeline_step,
    treatment,
)
from crystallize.cache import ReadSet, cache_key, full_key
from crystallize.context import FrozenContext
from crystallize.store.codec import MAGIC, CorruptEntry, decode


def _decode(blob: bytes) -> Any:
    """The decoded entry, or None when the codec rejects it."""
    try:
        return decode(blob)
    except CorruptEntry:
        return None


CALLS = "calls.log"


def _bump(label: str) -> None:
    with open(CALLS, "a", encoding="utf-8") as handle:
        handle.write(label + "\n")


def calls(label: str | None = None) -> int:
    path = Path(CALLS)
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    return len(lines) if label is None else lines.count(label)


# ------------------------------------------------------------------ building blocks


@data_source
def by_replicate(ctx: Any, replicate: int, offset: int = 0) -> dict[str, Any]:
    """Different input per replicate, so every replicate has its own cache entry."""
    return {"value": replicate + offset, "tags": ["a", "b"]}


@data_source
def constant(ctx: Any, value: Any = 0) -> Any:
    return value


@pipeline_step(cacheable=True)
def scale(data: dict[str, Any], ctx: Any, factor: int = 2) -> dict[str, Any]:
    _bump("scale")
    ctx.metrics.add("scaled", data["value"] * factor)
    return {**data, "value": data["value"] * factor}


@pipeline_step(cacheable=True)
def double(data: Any, ctx: Any) -> Any:
    _bump("double")
    return data * 2


@pipeline_step(cacheable=True)
def triple(data: Any, ctx: Any) -> Any:
    _bump("triple")
    return data * 3


@pipeline_step(cacheable=True)
def apply_fn(data: Any, ctx: Any, fn: Any = None) -> Any:
    _bump("apply_fn")
    return fn(data)


@pipeline_step(cacheable=True)
def measure(data: dict[str, Any], ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Records metrics both ways (twice through ctx, once returned) and an artifact."""
    _bump("measure")
    ctx.metrics.add("seen", data["value"])
    ctx.metrics.add("seen", data["value"] + 0.5)
    ctx.artifacts.add("note.txt", f"value={data['value']}".encode())
    return data, {"returned": data["value"] * 10}


@pipeline_step
def before(data: Any, ctx: Any) -> Any:
    ctx.metrics.add("before", 1)
    return data


@pipeline_step
def after(data: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.metrics.add("after", data["value"])
    return data


@pipeline_step
def plain(data: Any, ctx: Any, handle: Any = None) -> Any:
    _bump("plain")
    ctx.metrics.add("plain", 1)
    return data


@pipeline_step(cacheable=True)
def record_input(data: Any, ctx: Any) -> Any:
    _bump("record_input")
    ctx.metrics.add("ran", 1)
    return data


@pipeline_step(cacheable=True)
def fails_on_odd(data: dict[str, Any], ctx: Any) -> dict[str, Any]:
    _bump("fails_on_odd")
    if data["value"] % 2:
        raise ValueError("odd input")
    return data


@pipeline_step(cacheable=True)
async def async_scale(data: dict[str, Any], ctx: Any, factor: int = 2) -> dict[str, Any]:
    _bump("async_scale")
    ctx.metrics.add("scaled", data["value"] * factor)
    return {**data, "value": data["value"] * factor}


def add(x: int, y: int) -> int:
    return x + y


def experiment(source: Any, *steps: Any, execution: Any = None, **kwargs: Any) -> Experiment:
    kwargs.setdefault("name", "cache_test")
    return Experiment(
        source,
        Pipeline(list(steps)),
        plugins=[execution or SerialExecution(progress=False)],
        **kwargs,
    )


def hits(result: Any, step: str, condition: str = "baseline") -> int:
    return result.provenance["steps"][condition][step]["cache_hits"]


def entries(root: str | Path = ".cache") -> list[Path]:
    """Cache entries (not the read-set files kept beside them)."""
    return sorted(
        p for p in Path(root).rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "reads.json"
    )


def no_errors(result: Any) -> None:
    assert result.errors == {}, {c: {r: str(e) for r, e in errs.items()} for c, errs in result.replicate_errors.items()}


# ------------------------------------------------------------------ hits


def test_second_run_hits_and_returns_the_same_metrics() -> None:
    exp = experiment(by_replicate(), scale(), after(), replicates=3)

    first = exp.run()
    no_errors(first)
    assert calls("scale") == 3
    assert hits(first, "scale") == 0
    assert first.provenance["steps"]["baseline"]["scale"]["runs"] == 3

    second = exp.run()
    no_errors(second)
    assert calls("scale") == 3, "the cached step ran again"
    assert hits(second, "scale") == 3
    assert hits(second, "after") == 0
    assert sorted(second.provenance["cache_hits"]["baseline"]) == [(r, "scale") for r in range(3)]
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics
    assert second.metrics.baseline.metrics["scaled"] == [0, 2, 4]
    # the cached output flows into the next step
    assert second.metrics.baseline.metrics["after"] == [0, 2, 4]


def test_entry_lives_under_step_fingerprint_and_key() -> None:
    step = scale()
    exp = experiment(constant(value={"value": 7, "tags": []}), step)
    no_errors(exp.run())

    ctx = FrozenContext({"replicate": 0, "condition": "baseline"})
    base = cache_key(step, {"value": 7, "tags": []}, ctx)
    # scale looks up its parameter 'factor' in the context (absent: the default applies) and
    # draws no randomness: that is its read-set, and the full key holds 'factor' as absent
    full = full_key(base, ReadSet(keys=("factor",)), ctx, stage=1, global_digest="unused")
    expected = Path(".cache") / step.fingerprint / full
    assert entries() == [expected]
    assert _decode(expected.read_bytes()).data == {"value": 14, "tags": []}
    read_sets = json.loads((Path(".cache") / step.fingerprint / "reads.json").read_text())
    assert [ReadSet.from_json(r) for r in read_sets] == [ReadSet(keys=("factor",))]


def test_cache_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "elsewhere"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_DIR", str(shared))
    exp = experiment(by_replicate(), scale(), replicates=2)
    exp.run()
    assert hits(exp.run(), "scale") == 2
    assert len(entries(shared)) == 2
    assert not Path(".cache").exists()


# ------------------------------------------------------------------ what the key covers


def test_key_covers_the_step_function() -> None:
    out = {}
    for step in (double, triple):
        exp = experiment(constant(value=5), step(), after_value(), name=f"code_{step.__name__}")
        result = exp.run()
        no_errors(result)
        out[step.__name__] = result.metrics.baseline.metrics["out"]
    assert out == {"double": [10], "triple": [15]}
    assert calls("double") == 1 and calls("triple") == 1
    assert len(entries()) == 2


@pipeline_step
def after_value(data: Any, ctx: Any) -> Any:
    ctx.metrics.add("out", data)
    return data


def test_key_covers_edited_step_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing a step's body invalidates its entries even though its name stays the same."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module_file = tmp_path / "edited_steps_mod.py"
    template = textwrap.dedent(
        """
        from crystallize import pipeline_step

        @pipeline_step(cacheable=True)
        def work(data, ctx):
            with open("calls.log", "a") as fh:
                fh.write("work\\n")
            ctx.metrics.add("out", {expr})
            return data
        """
    )
    module_file.write_text(template.format(expr="data + 1"))
    module = importlib.import_module("edited_steps_mod")
    try:
        results = []
        for expr in ("data + 1", "data + 1", "data * 100 + 2"):
            if template.format(expr=expr) != module_file.read_text():
                module_file.write_text(template.format(expr=expr))
                module = importlib.reload(module)
            result = experiment(constant(value=3), module.work()).run()
            no_errors(result)
            results.append((result.metrics.baseline.metrics["out"], hits(result, "work")))
    finally:
        sys.modules.pop("edited_steps_mod", None)
    assert results == [([4], 0), ([4], 1), ([302], 0)]
    assert calls("work") == 2


def test_key_covers_explicit_params() -> None:
    def run(factor: int) -> Any:
        result = experiment(by_replicate(), scale(factor=factor)).run()
        no_errors(result)
        return result

    assert run(2).metrics.baseline.metrics["scaled"] == [0 * 2]
    r3 = run(3)
    assert hits(r3, "scale") == 0
    assert calls("scale") == 2
    assert hits(run(2), "scale") == 1
    assert hits(run(3), "scale") == 1
    assert calls("scale") == 2


def test_key_covers_partial_params() -> None:
    """Two partials of one function differ only in state kept outside __dict__."""
    outputs = []
    for y in (1, 2, 1):
        result = experiment(constant(value=10), apply_fn(fn=functools.partial(add, y=y)), after_value()).run()
        no_errors(result)
        outputs.append((result.metrics.baseline.metrics["out"], hits(result, "apply_fn")))
    assert outputs == [([11], 0), ([12], 0), ([11], 1)]
    assert calls("apply_fn") == 2


def test_key_covers_values_a_treatment_injects() -> None:
    @treatment("tripled")
    def tripled(ctx: Any) -> None:
        ctx.add("factor", 3)

    exp = experiment(
        by_replicate(offset=1),
        scale(),
        treatments=[
            treatment("five", {"factor": 5}),
            tripled,
            treatment("unrelated", {"something_else": 1}),
        ],
    )
    result = exp.run()
    no_errors(result)
    metrics = {c: tm.metrics["scaled"] for c, tm in result.metrics.conditions()}
    assert metrics == {"baseline": [2], "five": [5], "tripled": [3], "unrelated": [2]}
    # baseline, five and tripled each computed; 'unrelated' did not change anything scale reads
    assert calls("scale") == 3
    assert {c: hits(result, "scale", c) for c in metrics} == {
        "baseline": 0,
        "five": 0,
        "tripled": 0,
        "unrelated": 1,
    }
    again = exp.run()
    assert calls("scale") == 3
    assert {c: tm.metrics["scaled"] for c, tm in again.metrics.conditions()} == metrics


def test_key_covers_initial_context_values() -> None:
    for factor in (4, 6):
        result = experiment(by_replicate(offset=1), scale(), initial_ctx={"factor": factor}).run()
        no_errors(result)
        assert result.metrics.baseline.metrics["scaled"] == [factor]
    assert calls("scale") == 2


@pytest.mark.parametrize(
    "first, second",
    [
        ({"value": 1, "tags": ["a"]}, {"value": 1, "tags": ["b"]}),
        ({"value": 1, "tags": ["a"]}, {"value": 2, "tags": ["a"]}),
        ({"value": np.arange(5.0), "tags": []}, {"value": np.arange(5.0) + 1e-12, "tags": []}),
    ],
    ids=["list-item", "scalar", "numpy-array"],
)
def test_key_covers_the_input_data(first: dict[str, Any], second: dict[str, Any]) -> None:
    for data in (first, second, first):
        no_errors(experiment(constant(value=data), record_input()).run())
    assert calls("record_input") == 2


# ------------------------------------------------------------------ what a hit restores


def test_hit_restores_metrics_and_artifacts() -> None:
    exp = experiment(by_replicate(offset=3), before(), measure(), after(), replicates=2)
    first = exp.run()
    no_errors(first)
    second = exp.run()
    no_errors(second)
    assert calls("measure") == 2
    assert hits(second, "measure") == 2

    expected = {
        "before": [1, 1],
        "seen": [3, 3.5, 4, 4.5],
        "returned": [30, 40],
        "after": [3, 4],
    }
    for result in (first, second):
        tm = result.metrics.baseline
        assert tm.metrics == expected
        assert tm.replicates["seen"] == [0, 0, 1, 1]

    for result in (first, second):
        notes = result.artifact_copies("note.txt")
        assert sorted(Path(e.path).read_bytes() for e in notes) == [b"value=3", b"value=4"]
        assert {e.step for e in notes} == {"measure"}
    # the second run's artifacts were written into the second run's own folder
    first_paths = {e.path for e in first.artifact_copies("note.txt")}
    second_paths = {e.path for e in second.artifact_copies("note.txt")}
    assert first_paths.isdisjoint(second_paths)
    # metrics of other steps are not stored with the cached step's entry
    for path in entries():
        entry = _decode(path.read_bytes())
        assert set(entry.metrics) == {"seen", "returned"}
        assert [name for name, _ in entry.artifacts] == ["note.txt"]


def test_failed_cacheable_step_stores_nothing() -> None:
    exp = experiment(by_replicate(), fails_on_odd(), replicates=2)
    first = exp.run()
    assert set(first.replicate_errors["baseline"]) == {1}
    second = exp.run()
    assert set(second.replicate_errors["baseline"]) == {1}
    # replicate 0 hit; replicate 1 had no entry and ran again
    assert calls("fails_on_odd") == 3
    assert hits(second, "fails_on_odd") == 1
    assert len(entries()) == 1


def test_async_cacheable_step_hits() -> None:
    exp = experiment(by_replicate(), async_scale(), replicates=2)
    first = exp.run()
    second = exp.run()
    no_errors(second)
    assert calls("async_scale") == 2
    assert hits(second, "async_scale") == 2
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics == {"scaled": [0, 2]}


# ------------------------------------------------------------------ non-cacheable steps


def test_non_cacheable_steps_are_never_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("cache_key called")

    monkeypatch.setattr(crystallize.engine.replicate, "cache_key", refuse)
    monkeypatch.setattr(crystallize.cache, "cache_key", refuse)

    # the patch is effective: a cacheable step reaches it
    control = experiment(by_replicate(), scale(), name="control").run()
    assert control.replicate_errors["baseline"][0].exception_type == "AssertionError"

    result = experiment(by_replicate(), before(), plain(), after(), replicates=2, name="plain_only").run()
    no_errors(result)
    assert result.metrics.baseline.metrics["plain"] == [1, 1]
    assert calls("plain") == 2
    assert entries() == []


@pytest.mark.parametrize("name", ["named", None])
def test_non_cacheable_step_with_unhashable_param_runs(name: str | None) -> None:
    """A lock (or a model, a client) as a parameter of a non-cacheable step is fine."""
    result = experiment(constant(), plain(handle=threading.Lock()), name=name).run()
    no_errors(result)
    assert result.metrics.baseline.metrics["plain"] == [1]


# ------------------------------------------------------------------ stability across processes


_HASHSEED_SCRIPT = """
import json, sys
from crystallize import Experiment, Pipeline, SerialExecution, data_source, pipeline_step
from crystallize.cache import ReadSet, cache_key, full_key
from crystallize.context import FrozenContext

@data_source
def source(ctx, replicate):
    return {"alpha": replicate, "beta": ["x", "y"], "gamma": {"p", "q", "r", "s"}, "delta": {"k1": 1, "k2": 2}}

@pipeline_step(cacheable=True)
def count_keys(data, ctx):
    with open("calls.log", "a") as fh:
        fh.write("count_keys\\n")
    ctx.metrics.add("n", len(data) + data["alpha"])
    return data

step = count_keys()
exp = Experiment(source(), Pipeline([step]), name="hashseed", replicates=3,
                 plugins=[SerialExecution(progress=False)])
result = exp.run()
ctx = FrozenContext({"replicate": 0})
key = cache_key(step, source().fetch(ctx), ctx)
print(json.dumps({
    "key": key,
    "fingerprint": step.fingerprint,
    "hits": result.provenance["steps"]["baseline"]["count_keys"]["cache_hits"],
    "n": result.metrics.baseline.metrics["n"],
    "errors": len(result.errors),
}))
"""


def test_keys_are_stable_across_hash_seeds(tmp_path: Path) -> None:
    script = tmp_path / "hashseed_run.py"
    script.write_text(_HASHSEED_SCRIPT)
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "CRYSTALLIZE_CACHE_DIR": str(tmp_path / "shared")}
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = outputs
    assert first["key"] == second["key"]
    assert first["fingerprint"] == second["fingerprint"]
    assert first["errors"] == second["errors"] == 0
    assert (first["hits"], second["hits"]) == (0, 3)
    assert first["n"] == second["n"] == [4, 5, 6]
    assert calls("count_keys") == 3


# ------------------------------------------------------------------ corruption and atomic writes


def _corrupt(path: Path, how: str) -> None:
    blob = path.read_bytes()
    if how == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "truncate-header":
        path.write_bytes(blob[:10])
    elif how == "flip-payload-byte":
        index = len(blob) - 5
        path.write_bytes(blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :])
    elif how == "flip-digest-byte":
        index = len(MAGIC) + 3
        path.write_bytes(blob[:index] + bytes([blob[index] ^ 0x80]) + blob[index + 1 :])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncate", "truncate-header", "flip-payload-byte", "flip-digest-byte", "empty"])
def test_corrupt_entry_is_recomputed_and_rewritten(how: str, caplog: pytest.LogCaptureFixture) -> None:
    exp = experiment(by_replicate(offset=2), measure())
    first = exp.run()
    no_errors(first)
    (path,) = entries()
    good = path.read_bytes()
    _corrupt(path, how)
    assert _decode(path.read_bytes()) is None

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        second = exp.run()
    no_errors(second)
    assert any("corrupt" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert calls("measure") == 2
    assert hits(second, "measure") == 0
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics
    # rewritten in place, whole and valid
    assert entries() == [path]
    assert _decode(path.read_bytes()) is not None
    assert path.read_bytes() == good

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        third = exp.run()
    assert hits(third, "measure") == 1
    assert calls("measure") == 2
    assert not [r for r in caplog.records if "corrupt" in r.getMessage()]


def test_writes_leave_no_temporary_files() -> None:
    exp = experiment(by_replicate(), scale(), measure_copy(), replicates=4)
    exp.run()
    exp.run()
    assert len(entries()) == 8
    assert list(Path(".cache").rglob("*.tmp")) == []


@pipeline_step(cacheable=True)
def measure_copy(data: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {**data, "copy": True}


def test_encoding_failure_leaves_no_entry(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def explode(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("cannot encode this")

    exp = experiment(by_replicate(), scale(), replicates=2)
    # a scoped patch: monkeypatch.undo() would also undo conftest's chdir
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="crystallize"):
        patch.setattr(crystallize.cache, "encode_parts", explode)
        result = exp.run()
    no_errors(result)
    assert result.metrics.baseline.metrics["scaled"] == [0, 2]
    assert any("cannot encode this" in r.getMessage() for r in caplog.records)
    assert entries() == []
    assert list(Path(".cache").rglob("*.tmp")) == []

    assert hits(exp.run(), "scale") == 0
    assert calls("scale") == 4
    assert hits(exp.run(), "scale") == 2


class _FailingMoveFs:
    """A local filesystem whose move (the publishing rename) fails after the temp file is written."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def move(self, src: Any, dst: Any) -> None:
        raise OSError("disk went away")


def test_failed_rename_removes_the_temp_file(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from crystallize.store.filesystem import Store

    real_fs = Store.fs.fget

    def failing_fs(self: Store) -> Any:
        fs = real_fs(self)
        return _FailingMoveFs(fs) if ".cache" in self.location else fs

    monkeypatch.setattr(Store, "fs", property(failing_fs))
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        result = experiment(by_replicate(), scale()).run()
    no_errors(result)
    assert result.metrics.baseline.metrics["scaled"] == [0]
    assert any("disk went away" in r.getMessage() for r in caplog.records)
    assert [p for p in Path(".cache").rglob("*") if p.is_file()] == []


# ------------------------------------------------------------------ inputs that cannot be hashed


def _cycle() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


@pytest.mark.parametrize(
    "make",
    [lambda: {"lock": threading.Lock()}, lambda: (i for i in range(3)), _cycle],
    ids=["lock", "generator", "reference-cycle"],
)
def test_unhashable_input_warns_and_runs(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    @data_source
    def unhashable(ctx: Any) -> Any:
        return make()

    exp = experiment(unhashable(), record_input())
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        first = exp.run()
        second = exp.run()
    no_errors(first)
    no_errors(second)
    assert first.metrics.baseline.metrics["ran"] == [1]
    assert calls("record_input") == 2
    assert hits(second, "record_input") == 0
    warnings = [r for r in caplog.records if "cannot be hashed" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert entries() == []


# ------------------------------------------------------------------ process workers


def test_cache_works_under_process_execution() -> None:
    def run(execution: Any) -> Any:
        result = experiment(
            by_replicate(),
            scale(),
            after(),
            replicates=4,
            execution=execution,
            treatments=[treatment("ten", {"factor": 10})],
        ).run()
        no_errors(result)
        return result

    process = lambda: ParallelExecution(max_workers=2, executor_type="process", progress=False)  # noqa: E731
    first = run(process())
    assert calls("scale") == 8
    assert hits(first, "scale") + hits(first, "scale", "ten") == 0
    assert len(entries()) == 8

    second = run(process())
    assert calls("scale") == 8
    assert hits(second, "scale") == 4 and hits(second, "scale", "ten") == 4
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics
    assert second.metrics.treatments["ten"].metrics["scaled"] == [0, 10, 20, 30]

    # entries written by worker processes are read by an in-process run too
    serial = run(SerialExecution(progress=False))
    assert calls("scale") == 8
    assert hits(serial, "scale") == 4
