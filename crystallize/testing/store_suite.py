"""The ``Store`` API on a storage backend: what every data and cache store must do the same way.

Byte-level operations (reads, overwrites, listing, walking, deletes), atomic writes that
publish nothing when they fail, names that must not escape the root (a fixed list and a
thousand fuzzed ones, also as artifact names in a real run), and concurrent version claims
(eight interpreters racing, bare claims and whole runs). See :class:`StoreConformance`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from crystallize import (
    ArtifactPlugin,
    Experiment,
    FrozenContext,
    Pipeline,
    SerialExecution,
    ValidationError,
    data_source,
    pipeline_step,
)
from crystallize.store import Store, layout
from crystallize.store.locations import LEGACY_CACHE_ENV
from crystallize.store.records import claim_version, list_versions

REJECTED = (ValidationError, ValueError)


# ------------------------------------------------------------------ building blocks


@data_source
def by_replicate(ctx: FrozenContext) -> int:
    return ctx["replicate"]


@pipeline_step
def keep_name(data: int, ctx: FrozenContext, names: tuple[str, ...] = ()) -> int:
    ctx.artifacts.add(names[data], f"payload {data}".encode())
    return data


def _experiment(root: str, *steps: Any, name: str, replicates: int) -> Experiment:
    plugins = [SerialExecution(progress=False), ArtifactPlugin(root_dir=root)]
    return Experiment(by_replicate(), Pipeline(list(steps)), plugins=plugins, name=name, replicates=replicates)


class _Unbufferable:
    """Not bytes-like: handing it to the stream fails before a byte is written."""


class _FailingStream:
    """Writes the first half of the data for real, then raises ``error``."""

    def __init__(self, stream: Any, error: BaseException) -> None:
        self.stream = stream
        self.error = error

    def __enter__(self) -> _FailingStream:
        return self

    def __exit__(self, *exc: object) -> None:
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


_FUZZ_PIECES = [
    "..", ".", "/", "//", "\\", "\x00", "\x01", "\x1f", "\x7f", "\n", " ", "  ", "\t",
    "a", "b", "x.txt", "-", "_", "~", "%2e%2e", "%2f", "+", "#", "?", "*", "'", '"', ":",
    "é", "日本", "🙂", "\u202e", "\u00a0", "\u2028", "\u0085", "ﬁ", "\uff0e\uff0e", "\uff0f",
    "../", "/..", "..\\", "C:", "etc", "passwd",
]  # fmt: skip


def fuzz_names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
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


# ================================================================ the suite


class StoreConformance:
    """Subclass this in a test module of your own and provide a ``store_root`` fixture::

        from crystallize.testing import StoreConformance

        class TestMyBackend(StoreConformance):
            @pytest.fixture
            def store_root(self, tmp_path):
                return f"mybackend://bucket-for-this-test/{tmp_path.name}"

    ``store_root`` is a location ``Store`` accepts (a folder or a URI), fresh and empty for
    each test: a local one inside ``tmp_path``. The tests check that nothing was written
    outside the root by listing :meth:`written_paths`; its default lists ``tmp_path`` for a
    local root and the whole bucket (the root's first path segment) otherwise. Override it
    when your backend has a better view of what a test wrote (the S3 tests list the bucket
    with boto3, independently of the store's own client).
    """

    @pytest.fixture
    def store_root(self) -> str:
        raise NotImplementedError(f"{type(self).__name__}: provide a `store_root` fixture (a fresh, empty root)")

    @pytest.fixture(autouse=True)
    def _conformance_workdir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """Runs, and the interpreters the claim races start, work in a fresh folder per test."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv(LEGACY_CACHE_ENV, raising=False)
        return tmp_path

    def written_paths(self, store_root: str, tmp_path: Path) -> list[str]:
        """Every file this test could have written to: all of ``tmp_path``, or the whole bucket."""
        store = Store(store_root)
        if store.is_local:
            return sorted(str(p) for p in tmp_path.rglob("*") if not p.is_dir())
        container = store.base.split("/", 1)[0]
        infos = store.fs.get_file_info(pafs.FileSelector(container, recursive=True))
        return sorted(info.path + ("/" if info.type == pafs.FileType.Directory else "") for info in infos)

    def is_inside(self, store_root: str, path: str) -> bool:
        """Whether ``path`` (as :meth:`written_paths` lists it) is below the root."""
        return path.startswith(Store(store_root).base.rstrip("/") + "/")

    def temporaries(self, store_root: str, tmp_path: Path) -> list[str]:
        return [p for p in self.written_paths(store_root, tmp_path) if p.endswith(".tmp")]

    # ------------------------------------------------------------ bytes in, bytes out

    def test_basic_operations(self, store_root: str, tmp_path: Path) -> None:
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
        assert store.uri("e.txt") == (os.path.join(store_root, "e.txt") if store.is_local else f"{store_root}/e.txt")

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

        # sessions sharing a version delete one lease file at once: none of them fails
        for _ in range(5):
            store.write_bytes("shared/lease.json", b"{}")
            errors: list[BaseException] = []
            barrier = threading.Barrier(4)

            def remove(barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
                barrier.wait()
                try:
                    store.delete("shared/lease.json")
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=remove) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == [] and not store.exists("shared/lease.json")

        assert self.temporaries(store_root, tmp_path) == []
        assert all(self.is_inside(store_root, path) for path in self.written_paths(store_root, tmp_path))

    @pytest.mark.parametrize("failure", ["unbufferable", "midway-error", "midway-interrupt"])
    def test_failed_write_publishes_nothing(self, store_root: str, tmp_path: Path, failure: str) -> None:
        store = Store(store_root)
        store.write_bytes("keep/old.txt", b"the old content")
        payload = os.urandom(64_000)
        targets: dict[str, type[BaseException]]
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
        assert self.temporaries(store_root, tmp_path) == []

    # ------------------------------------------------------------ names

    @pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
    def test_unsafe_names_are_rejected(self, store_root: str, tmp_path: Path, name: str) -> None:
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
        assert all(self.is_inside(store_root, path) for path in self.written_paths(store_root, tmp_path))

    def test_fuzzed_names_never_escape_the_store(self, store_root: str, tmp_path: Path) -> None:
        names = fuzz_names(1000, seed=20251123)
        verdicts = [accepted(n) for n in names]
        assert 100 < sum(verdicts) < 850, sum(verdicts)  # both verdicts well represented
        assert sum(map(obviously_unsafe, names)) > 300
        for name, ok in zip(names, verdicts, strict=True):
            if obviously_unsafe(name):
                assert not ok, f"{name!r} was accepted"
        outside_before = _snapshot(tmp_path.parent, tmp_path)

        # (a) as artifact names in a real run: a rejected name fails its replicate, at the step
        exp = _experiment(store_root, keep_name(names=tuple(names)), name="fuzz", replicates=len(names))
        result = exp.run()
        failed = result.replicate_errors.get("baseline", {})
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
        paths = self.written_paths(store_root, tmp_path)
        escaped = [p for p in paths if not self.is_inside(store_root, p)]
        assert escaped == []
        assert _snapshot(tmp_path.parent, tmp_path) == outside_before
        files = [p for p in store.walk_files("direct")]
        assert len(files) == sum(verdicts)

    # ------------------------------------------------------------ concurrent version claims

    def test_concurrent_claims_get_distinct_versions(self, store_root: str, tmp_path: Path) -> None:
        outputs = run_together(_CLAIM_SCRIPT, store_root, tmp_path)
        versions = sorted(int(out[1]) for out in outputs)
        assert versions == list(range(8))
        store = Store(store_root)
        assert list_versions(store, "exp") == list(range(8))
        # a claim after the race takes the next free version
        assert claim_version(store, "exp") == 8

    @pytest.mark.parametrize("count", [2, 8])
    def test_concurrent_runs_get_distinct_versions(self, store_root: str, tmp_path: Path, count: int) -> None:
        outputs = run_together(_RUN_SCRIPT, store_root, tmp_path, count=count)
        by_version = {int(out[1]): out[2] for out in outputs}
        assert sorted(by_version) == list(range(count))
        store = Store(store_root)
        assert list_versions(store, "race") == list(range(count))
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
