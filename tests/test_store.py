"""The store on every backend: a local folder and S3 (moto on loopback).

Every test takes ``store_root`` (a local path or an ``s3://bucket/prefix`` URI) and runs
once per backend: byte-level operations and atomic writes, names that must not escape
the root, concurrent version claims, the step cache, artifacts and run records, and
process-pool workers writing straight to the store.
"""

from __future__ import annotations

import json
import logging
import os
import random
import struct
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3_server import list_keys, moto_endpoint, new_bucket, s3_bucket, split_s3  # noqa: F401

from crystallize import (
    ArtifactPlugin,
    Experiment,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    ValidationError,
    data_source,
    load_run,
    pipeline_step,
    treatment,
)
from crystallize.store import Store, layout
from crystallize.store.codec import MAGIC, CacheEntry, CorruptEntry, decode, encode
from crystallize.store.records import claim_version, list_versions, load_outcomes

REJECTED = (ValidationError, ValueError)
CALLS = "calls.log"


# ------------------------------------------------------------------ backends


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The root of a store of this test's own: a folder in ``tmp_path`` or a fresh S3 bucket/prefix."""
    if request.param == "local":
        root = tmp_path / "sandbox" / "store"
        root.mkdir(parents=True)
        return str(root)
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"s3://{new_bucket(endpoint)}/store-{uuid.uuid4().hex[:8]}"


def is_s3(root: str) -> bool:
    return root.startswith("s3://")


def everything(root: str, tmp_path: Path) -> list[str]:
    """Every file this test could have written to: all of ``tmp_path``, or the whole bucket."""
    if is_s3(root):
        bucket, _ = split_s3(root)
        return [f"{bucket}/{key}" for key in list_keys(os.environ["CRYSTALLIZE_S3_ENDPOINT"], bucket)]
    return sorted(str(p) for p in tmp_path.rglob("*") if not p.is_dir())


def inside(root: str, path: str) -> bool:
    if is_s3(root):
        bucket, prefix = split_s3(root)
        return path.startswith(f"{bucket}/{prefix}/")
    return path.startswith(root.rstrip("/") + "/")


def temporaries(root: str, tmp_path: Path) -> list[str]:
    return [p for p in everything(root, tmp_path) if p.endswith(".tmp")]


# ------------------------------------------------------------------ building blocks


def _bump(label: str) -> None:
    with open(CALLS, "a", encoding="utf-8") as handle:
        handle.write(label + "\n")


def calls(label: str) -> int:
    path = Path(CALLS)
    return path.read_text(encoding="utf-8").splitlines().count(label) if path.exists() else 0


@data_source
def by_replicate(ctx: Any) -> int:
    return ctx["replicate"]


@pipeline_step
def emit(data: int, ctx: Any, delta: int = 0) -> int:
    _bump("emit")
    value = data + delta
    ctx.metrics.add("value", value)
    ctx.metrics.add("square", value * value)
    ctx.artifacts.add("out/result.txt", f"{ctx['condition']}:{ctx['replicate']}:{value}".encode())
    return value


@pipeline_step
def keep_name(data: int, ctx: Any, names: tuple[str, ...] = ()) -> int:
    ctx.artifacts.add(names[data], f"payload {data}".encode())
    return data


def build_value(kind: str) -> Any:
    import pandas as pd

    if kind == "numpy-float":
        return np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    if kind == "numpy-int":
        return np.array([[1, -2], [3, 2**40]], dtype=np.int64)
    if kind == "arrow":
        return pa.table({"a": [1, 2, 3], "b": ["x", None, "zé"], "c": [0.5, None, 1e300]})
    if kind == "pandas":
        return pd.DataFrame({"a": [1.5, 2.5, np.nan], "b": ["p", "q", "r"]}, index=[10, 20, 30])
    return {"kind": kind, "nested": [1, (2, 3)]}


KINDS = ("numpy-float", "numpy-int", "arrow", "pandas", "plain")


@data_source
def kind_source(ctx: Any) -> str:
    return KINDS[ctx["replicate"]]


@pipeline_step(cacheable=True)
def build(data: str, ctx: Any) -> Any:
    _bump("build")
    ctx.metrics.add("built", 1)
    ctx.artifacts.add("kind.txt", data.encode())
    return build_value(data)


def assert_same(got: Any, expected: Any) -> None:
    import pandas as pd

    assert type(got) is type(expected), (type(got), type(expected))
    if isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    elif isinstance(expected, pa.Table):
        assert got.equals(expected, check_metadata=False), (got, expected)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    else:
        assert got == expected


@pipeline_step
def check_type(data: Any, ctx: Any) -> Any:
    """Fails the replicate unless the (possibly cached) value is equal to and of the type built."""
    assert_same(data, build_value(KINDS[ctx["replicate"]]))
    ctx.metrics.add("same", 1)
    return data


@pipeline_step(cacheable=True)
def signed(data: int, ctx: Any) -> int:
    _bump("signed")
    ctx.metrics.add("signed", data + 100)
    return data + 100


def no_errors(result: Any) -> None:
    assert result.errors == {}, {c: {r: str(e) for r, e in errs.items()} for c, errs in result.errors.items()}


def hits(result: Any, step: str, condition: str = "baseline") -> int:
    return result.provenance["steps"][condition][step]["cache_hits"]


def experiment(root: str | None, *steps: Any, name: str = "store_exp", execution: Any = None, **kwargs: Any) -> Any:
    plugins: list[Any] = [execution or SerialExecution(progress=False)]
    if root is not None:
        plugins.append(ArtifactPlugin(root_dir=root))
    return Experiment(kwargs.pop("source", by_replicate()), Pipeline(list(steps)), plugins=plugins, name=name, **kwargs)


# ------------------------------------------------------------------ 1. bytes in, bytes out


def test_basic_operations(store_root: str, tmp_path: Path) -> None:
    store = Store(store_root)
    assert not store.exists("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nowhere/at/all.bin")
    assert store.list_dir("nowhere") == []
    assert list(store.walk_files("nowhere")) == []

    every_byte = bytes(range(256)) * 3
    store.write_bytes("a/b.txt", b"hello")
    store.write_bytes("a/c/d.bin", memoryview(every_byte))
    store.write_bytes("e.txt", b"")
    assert store.read_bytes("a/b.txt") == b"hello"
    assert store.read_bytes("a/c/d.bin") == every_byte
    assert store.read_bytes("e.txt") == b""
    assert store.exists("a/b.txt") and store.exists("a") and store.exists("e.txt")
    assert store.is_dir("a") and not store.is_dir("a/b.txt")
    assert store.list_dir("a") == ["b.txt", "c"]
    assert sorted(store.walk_files("a")) == ["a/b.txt", "a/c/d.bin"]
    assert store.uri("e.txt") == (f"{store_root}/e.txt" if is_s3(store_root) else os.path.join(store_root, "e.txt"))

    # overwriting replaces the whole content, in both directions
    big = os.urandom(300_000)
    store.write_bytes("a/b.txt", big)
    assert store.read_bytes("a/b.txt") == big
    store.write_bytes("a/b.txt", b"short")
    assert store.read_bytes("a/b.txt") == b"short"

    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/b.txt")
    store.delete("a")
    assert not store.exists("a/c/d.bin")
    assert list(store.walk_files("a")) == []
    store.delete("a")  # deleting what is gone is not an error
    assert store.read_bytes("e.txt") == b""

    assert temporaries(store_root, tmp_path) == []
    assert all(inside(store_root, path) for path in everything(store_root, tmp_path))


class _Unbufferable:
    """Not bytes-like: handing it to the stream fails before a byte is written."""


class _FailingStream:
    """Writes the first half of the data for real, then raises ``error``."""

    def __init__(self, stream: Any, error: BaseException) -> None:
        self.stream = stream
        self.error = error

    def __enter__(self) -> _FailingStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stream.close()

    def write(self, data: Any) -> None:
        view = memoryview(data)
        self.stream.write(view[: len(view) // 2])
        raise self.error


class _FailingFilesystem:
    """A ``pyarrow.fs`` filesystem whose output streams die halfway through a write."""

    def __init__(self, fs: pafs.FileSystem, error: BaseException) -> None:
        self._fs = fs
        self._error = error
        self.opened: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def open_output_stream(self, path: str, *args: Any, **kwargs: Any) -> _FailingStream:
        self.opened.append(path)
        return _FailingStream(self._fs.open_output_stream(path, *args, **kwargs), self._error)


@pytest.mark.parametrize("failure", ["unbufferable", "midway-error", "midway-interrupt"])
def test_failed_write_publishes_nothing(store_root: str, tmp_path: Path, failure: str) -> None:
    store = Store(store_root)
    store.write_bytes("keep/old.txt", b"the old content")
    payload = os.urandom(64_000)
    if failure == "unbufferable":
        targets = {"keep/old.txt": TypeError, "keep/new.txt": TypeError}
    else:
        error: BaseException = RuntimeError("disk on fire") if failure == "midway-error" else KeyboardInterrupt()
        failing = _FailingFilesystem(store.fs, error)
        store._fs = failing  # type: ignore[assignment]
        targets = {"keep/old.txt": type(error), "keep/new.txt": type(error)}
    for relative, expected in targets.items():
        with pytest.raises(expected):
            store.write_bytes(relative, _Unbufferable() if failure == "unbufferable" else payload)  # type: ignore[arg-type]
    if failure != "unbufferable":
        # the failure really happened inside the write, after bytes had gone to the temporary
        assert len(failing.opened) == 2 and all(p.endswith(".tmp") for p in failing.opened)

    fresh = Store(store_root)
    assert fresh.read_bytes("keep/old.txt") == b"the old content"
    assert not fresh.exists("keep/new.txt")
    assert fresh.list_dir("keep") == ["old.txt"]
    assert temporaries(store_root, tmp_path) == []


def test_s3_options_in_the_uri(moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """S3 only: without ``CRYSTALLIZE_S3_ENDPOINT`` the endpoint comes from the URI's query string."""
    monkeypatch.delenv("CRYSTALLIZE_S3_ENDPOINT")
    host_port = moto_endpoint.split("://", 1)[1]
    store = Store(f"s3://{s3_bucket}/q/root?endpoint_override={host_port}&scheme=http&region=us-east-1")
    store.write_bytes("x/y.bin", b"via the query string")
    assert store.read_bytes("x/y.bin") == b"via the query string"
    assert store.uri("x/y.bin") == f"s3://{s3_bucket}/q/root/x/y.bin"
    assert "q/root/x/y.bin" in list_keys(moto_endpoint, s3_bucket)


# ------------------------------------------------------------------ 2. names


BAD_NAMES = [
    "",
    "/etc/passwd",
    "/abs",
    "..",
    ".",
    "../x",
    "a/../../x",
    "a/./b",
    "a//b",
    "a/",
    "x/..",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "a\\b",
    "..\\..\\x",
    "C:\\windows",
    " lead",
    "trail ",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_names_are_rejected(store_root: str, tmp_path: Path, name: str) -> None:
    store = Store(store_root)
    with pytest.raises(REJECTED):
        layout.artifact("exp", 0, 0, "baseline", "step", name)
    with pytest.raises(REJECTED):
        store.full_path(name)
    with pytest.raises(REJECTED):
        store.write_bytes(name, b"x")
    with pytest.raises(REJECTED):
        store.read_bytes(name)
    if "/" not in name:
        for position in range(3):
            parts = ["exp", "baseline", "step"]
            parts[position] = name
            with pytest.raises(REJECTED):
                layout.artifact(parts[0], 0, 0, parts[1], parts[2], "ok.txt")
    assert all(inside(store_root, path) for path in everything(store_root, tmp_path))


_FUZZ_PIECES = [
    "..", ".", "/", "//", "\\", "\x00", "\x01", "\x1f", "\x7f", "\n", " ", "  ", "\t",
    "a", "b", "x.txt", "-", "_", "~", "%2e%2e", "%2f", "+", "#", "?", "*", "'", '"', ":",
    "é", "日本", "🙂", "\u202e", "\u00a0", "\u2028", "\u0085", "ﬁ", "\uff0e\uff0e", "\uff0f",
    "../", "/..", "..\\", "C:", "etc", "passwd",
]  # fmt: skip


def fuzz_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = []
    while len(names) < count:
        name = "".join(rng.choice(_FUZZ_PIECES) for _ in range(rng.randint(1, 6)))
        if rng.random() < 0.15:
            name = "/" + name
        if len(name.encode()) < 100:
            names.append(name)
    return names


def accepted(name: str) -> bool:
    try:
        layout.artifact("fuzz", 0, 0, "baseline", "keep_name", name)
    except REJECTED:
        return False
    return True


def obviously_unsafe(name: str) -> bool:
    """What must be rejected whatever the naming policy, judged independently of it."""
    segments = name.split("/")
    return (
        name.startswith("/")
        or any(s in ("", ".", "..") for s in segments)
        or any(c in name for c in "\\\x00\n")
        or any(ord(c) < 0x20 for c in name)
    )


def _snapshot(folder: Path, skip: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if skip not in p.parents and p != skip}


def test_fuzzed_names_never_escape_the_store(store_root: str, tmp_path: Path) -> None:
    names = fuzz_names(1000, seed=20251123)
    verdicts = [accepted(n) for n in names]
    assert 150 < sum(verdicts) < 850, sum(verdicts)
    assert sum(map(obviously_unsafe, names)) > 300
    for name, ok in zip(names, verdicts, strict=True):
        if obviously_unsafe(name):
            assert not ok, f"{name!r} was accepted"
    outside_before = _snapshot(tmp_path.parent, tmp_path)

    # (a) as artifact names in a real run: a rejected name fails its replicate, at the step
    exp = experiment(store_root, keep_name(names=tuple(names)), name="fuzz", replicates=len(names))
    result = exp.run()
    failed = result.errors.get("baseline", {})
    assert sorted(failed) == [i for i, ok in enumerate(verdicts) if not ok]
    for error in failed.values():
        assert error.stage == "keep_name"
        assert error.exception_type == "ValidationError"
        assert "keep_name" in error.message
    assert result.metrics.baseline is not None
    # (b) the same names straight through layout.artifact + Store.write_bytes
    store = Store(store_root)
    for i, (name, ok) in enumerate(zip(names, verdicts, strict=True)):
        if ok:
            assert store.read_bytes(layout.artifact("fuzz", 0, i, "baseline", "keep_name", name)) == (
                f"payload {i}".encode()
            )
            store.write_bytes(layout.artifact("direct", 0, i, "baseline", "step", name), name.encode())
        else:
            with pytest.raises(REJECTED):
                store.write_bytes(layout.artifact("direct", 0, i, "baseline", "step", name), b"x")
            with pytest.raises(REJECTED):
                store.write_bytes(f"raw/{i}/{name}", b"x")
    # nothing outside the root, and nothing else anywhere
    paths = everything(store_root, tmp_path)
    escaped = [p for p in paths if not inside(store_root, p)]
    assert escaped == []
    assert _snapshot(tmp_path.parent, tmp_path) == outside_before
    files = [p for p in store.walk_files("direct")]
    assert len(files) == sum(verdicts)


# ------------------------------------------------------------------ 3. concurrent version claims

_CLAIM_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from crystallize.store import Store
    from crystallize.store.records import claim_version

    store = Store(sys.argv[1])
    store.list_dir("warm-up")  # connect before the start signal
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    print("version", claim_version(store, "exp"), flush=True)
    """
)

_RUN_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from crystallize import ArtifactPlugin, Experiment, Pipeline, SerialExecution, data_source, pipeline_step

    @data_source
    def source(ctx):
        return ctx["replicate"]

    @pipeline_step
    def work(data, ctx):
        ctx.metrics.add("value", data + 1)
        ctx.artifacts.add("pid.txt", str(os.getpid()).encode())
        return data

    plugin = ArtifactPlugin(root_dir=sys.argv[1])
    exp = Experiment(
        source(), Pipeline([work()]), plugins=[plugin, SerialExecution(progress=False)], name="race", replicates=2
    )
    plugin.store().list_dir("warm-up")
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    result = exp.run()
    assert not result.errors, result.errors
    print("version", plugin.version, os.getpid(), flush=True)
    """
)


def run_together(script: str, root: str, tmp_path: Path, count: int = 8, timeout: float = 60) -> list[list[str]]:
    """Start ``count`` interpreters, wait until all are ready, let them go at once; their last lines."""
    go = tmp_path / f"go-{uuid.uuid4().hex}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, root, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        go.touch()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            outputs.append(out.split())
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_concurrent_claims_get_distinct_versions(store_root: str, tmp_path: Path) -> None:
    outputs = run_together(_CLAIM_SCRIPT, store_root, tmp_path)
    versions = sorted(int(out[1]) for out in outputs)
    assert versions == list(range(8))
    store = Store(store_root)
    assert list_versions(store, "exp") == list(range(8))
    # a claim after the race takes the next free version
    assert claim_version(store, "exp") == 8


def test_concurrent_runs_get_distinct_versions(store_root: str, tmp_path: Path) -> None:
    outputs = run_together(_RUN_SCRIPT, store_root, tmp_path)
    by_version = {int(out[1]): out[2] for out in outputs}
    assert sorted(by_version) == list(range(8))
    store = Store(store_root)
    assert list_versions(store, "race") == list(range(8))
    for version, pid in by_version.items():
        for name in (layout.PLAN, layout.RUN_RECORD, layout.METRICS):
            assert store.exists(layout.run_file("race", version, name)), (version, name)
        record = json.loads(store.read_bytes(layout.run_file("race", version, layout.RUN_RECORD)))
        assert record["version"] == version
        # every artifact of the version came from the one process that claimed it
        for replicate in range(2):
            blob = store.read_bytes(layout.artifact("race", version, replicate, "baseline", "work", "pid.txt"))
            assert blob.decode() == pid
        table = pq.read_table(pa.BufferReader(store.read_bytes(layout.run_file("race", version, layout.METRICS))))
        assert table.num_rows == 2


# ------------------------------------------------------------------ 4. the step cache on the backend


@pytest.fixture
def cache_root(store_root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    location = f"{store_root}/cache"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", location)
    monkeypatch.delenv("CRYSTALLIZE_CACHE_KEY", raising=False)
    return location


def cache_entries(location: str, step: Any) -> list[str]:
    """The step's entries (not the read-set file beside them, nor temporary files)."""
    names = Store(location).walk_files(step.fingerprint)
    return sorted(p for p in names if not p.rsplit("/", 1)[-1].startswith(".") and not p.endswith("/reads.json"))


def test_cache_hits_and_keeps_arrow_types(store_root: str, cache_root: str) -> None:
    step = build()
    exp = experiment(store_root, step, check_type(), source=kind_source(), replicates=len(KINDS))
    first = exp.run()
    no_errors(first)
    assert hits(first, "build") == 0 and calls("build") == len(KINDS)
    entries = cache_entries(cache_root, step)
    assert len(entries) == len(KINDS)
    encodings = set()
    for entry in entries:
        blob = Store(cache_root).read_bytes(entry)
        (length,) = struct.unpack_from("<I", blob, len(MAGIC))
        encodings.add(json.loads(blob[len(MAGIC) + 4 : len(MAGIC) + 4 + length])["data"]["encoding"])
        assert decode(blob).artifacts[0][0] == "kind.txt"
    assert {"arrow-tensor", "arrow-table", "arrow-pandas", "pickle"} <= encodings

    second = exp.run()
    no_errors(second)
    assert hits(second, "build") == len(KINDS)
    assert calls("build") == len(KINDS), "a cached step ran again"
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics
    # artifacts restored from the cache land in the second run's own version
    store = Store(store_root)
    assert sorted(e.path for e in second.get_artifact("kind.txt")) == sorted(
        store.uri(layout.artifact("store_exp", 1, r, "baseline", "build", "kind.txt")) for r in range(len(KINDS))
    )
    for replicate, kind in enumerate(KINDS):
        assert store.read_bytes(layout.artifact("store_exp", 1, replicate, "baseline", "build", "kind.txt")) == (
            kind.encode()
        )
    if is_s3(store_root):
        assert not Path(".cache").exists()


def test_corrupt_entry_is_recomputed(store_root: str, cache_root: str, caplog: pytest.LogCaptureFixture) -> None:
    step = signed()
    exp = experiment(store_root, step, replicates=1)
    no_errors(exp.run())
    (entry,) = cache_entries(cache_root, step)
    cache = Store(cache_root)
    good = cache.read_bytes(entry)
    cache.write_bytes(entry, good[: len(good) - 7])

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        again = exp.run()
    no_errors(again)
    assert hits(again, "signed") == 0 and calls("signed") == 2
    assert again.metrics.baseline.metrics["signed"] == [100]
    assert any("corrupt" in r.getMessage() and "signed" in r.getMessage() for r in caplog.records), caplog.text
    assert cache.read_bytes(entry) == good, "the entry was not rewritten"

    third = exp.run()
    assert hits(third, "signed") == 1 and calls("signed") == 2


class Booby:
    """Unpickling this runs code: it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_spring, (self.path,))


def _spring(path: str) -> int:
    Path(path).write_text("unpickled")
    return -1


def test_cache_signing_key(
    store_root: str, cache_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    step = signed()
    exp = experiment(store_root, step, replicates=1)
    cache = Store(cache_root)
    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "k1")
    no_errors(exp.run())
    (entry,) = cache_entries(cache_root, step)
    decode(cache.read_bytes(entry), b"k1")
    assert hits(exp.run(), "signed") == 1 and calls("signed") == 1

    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "k2")
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        switched = exp.run()
    assert hits(switched, "signed") == 0 and calls("signed") == 2
    assert switched.metrics.baseline.metrics["signed"] == [100]
    assert any(
        "signed" in r.getMessage() and ("untrusted" in r.getMessage() or "signature" in r.getMessage())
        for r in caplog.records
    ), caplog.text
    decode(cache.read_bytes(entry), b"k2")  # rewritten under the new key
    with pytest.raises(CorruptEntry):
        decode(cache.read_bytes(entry), b"k1")
    assert hits(exp.run(), "signed") == 1 and calls("signed") == 2

    # an entry that runs code when unpickled, signed with k1, planted at the entry's path
    marker = tmp_path / "unpickled.marker"
    trap = encode(CacheEntry(data=Booby(str(marker)), metrics={"signed": [-1]}), b"k1")
    cache.write_bytes(entry, trap)
    refused = exp.run()  # still k2
    assert not marker.exists(), "an entry signed with another key was unpickled"
    assert hits(refused, "signed") == 0 and calls("signed") == 3
    assert refused.metrics.baseline.metrics["signed"] == [100]

    cache.write_bytes(entry, trap)
    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "k1")
    trusted = exp.run()
    assert marker.exists(), "the trap never fired, so the test above proves nothing"
    assert hits(trusted, "signed") == 1 and calls("signed") == 3
    assert trusted.metrics.baseline.metrics["signed"] == [-1]


# ------------------------------------------------------------------ 5. artifacts and run records


@pytest.mark.parametrize("configured", ["plugin", "env"])
def test_artifacts_and_run_records(store_root: str, configured: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if configured == "env":
        monkeypatch.setenv("CRYSTALLIZE_DATA_URI", store_root)
    exp = experiment(
        store_root if configured == "plugin" else None,
        emit(),
        name="records",
        replicates=3,
        treatments=[treatment("hot", {"delta": 10})],
    )
    result = exp.run()
    no_errors(result)
    store = Store(store_root)
    for condition, delta in (("baseline", 0), ("hot", 10)):
        for replicate in range(3):
            relative = layout.artifact("records", 0, replicate, condition, "emit", "out/result.txt")
            assert relative == f"records/v0/replicate_{replicate}/{condition}/emit/out/result.txt"
            assert store.read_bytes(relative) == f"{condition}:{replicate}:{replicate + delta}".encode()
        paths = sorted(e.path for e in result.artifacts[condition])
        assert paths == sorted(store.uri(f"records/v0/replicate_{r}/{condition}/emit/out/result.txt") for r in range(3))
    for name in (layout.PLAN, layout.METRICS, layout.RUN_RECORD):
        assert store.exists(f"records/v0/{name}"), name
    parts = store.list_dir("records/v0/outcomes")
    assert parts and all(p.startswith("part-") for p in parts), parts
    assert sorted(load_outcomes(store, "records", 0)) == [(c, r) for c in ("baseline", "hot") for r in range(3)]
    assert not Path("data").exists(), "something was written to the default local data folder"

    for location in (f"{store_root}/records/v0", f"{store_root}/records"):
        loaded = load_run(location)
        assert loaded.provenance["finished"] is True
        for condition, metrics in result.metrics.conditions():
            reloaded = dict(loaded.metrics.conditions())[condition]
            assert reloaded.metrics == metrics.metrics
            assert reloaded.replicates == metrics.replicates
    table = pq.read_table(pa.BufferReader(store.read_bytes("records/v0/metrics.parquet")))
    assert table.num_rows == 2 * 3 * 2

    no_errors(exp.run())
    assert list_versions(store, "records") == [0, 1]


def test_resume_of_a_finished_run_reruns_nothing(store_root: str) -> None:
    exp = experiment(store_root, emit(), name="resumable", replicates=3, treatments=[treatment("hot", {"delta": 10})])
    first = exp.run()
    no_errors(first)
    assert calls("emit") == 6
    resumed = exp.run(strategy="resume")
    no_errors(resumed)
    assert calls("emit") == 6, "resume reran finished replicates"
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 6}
    for condition, metrics in first.metrics.conditions():
        assert dict(resumed.metrics.conditions())[condition].metrics == metrics.metrics
    assert list_versions(Store(store_root), "resumable") == [0]
    assert load_run(f"{store_root}/resumable/v0").provenance["finished"] is True


# ------------------------------------------------------------------ 6. process-pool workers


@pipeline_step(cacheable=True)
def in_worker(data: int, ctx: Any) -> int:
    ctx.metrics.add("doubled", data * 2)
    ctx.artifacts.add("pid.txt", str(os.getpid()).encode())
    return data * 2


def test_process_workers_write_to_the_store(store_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYSTALLIZE_DATA_URI", f"{store_root}/data")
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", f"{store_root}/cache")
    step = in_worker()

    def run() -> Any:
        result = experiment(
            None,
            step,
            name="pooled",
            replicates=6,
            execution=ParallelExecution(executor_type="process", max_workers=2, progress=False),
        ).run()
        no_errors(result)
        return result

    first = run()
    data = Store(f"{store_root}/data")
    pids = {
        data.read_bytes(layout.artifact("pooled", 0, r, "baseline", "in_worker", "pid.txt")).decode() for r in range(6)
    }
    assert pids and str(os.getpid()) not in pids, "the artifacts were not written by the workers"
    assert len(cache_entries(f"{store_root}/cache", step)) == 6
    assert first.metrics.baseline.metrics["doubled"] == [0, 2, 4, 6, 8, 10]

    second = run()
    assert hits(second, "in_worker") == 6
    assert second.metrics.baseline.metrics == first.metrics.baseline.metrics
    # the hits replayed the cached artifacts into the new version
    for replicate in range(6):
        blob = data.read_bytes(layout.artifact("pooled", 1, replicate, "baseline", "in_worker", "pid.txt"))
        assert blob.decode() in pids
    assert not Path("data").exists() and not Path(".cache").exists()
