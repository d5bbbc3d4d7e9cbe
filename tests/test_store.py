"""The store on every backend: a local folder and S3 (moto on loopback).

Every test takes ``store_root`` (a local path or an ``s3://bucket/prefix`` URI) and runs
once per backend. The backend-generic ``Store`` API (byte-level operations and atomic
writes, names that must not escape the root, concurrent version claims) is the shipped
suite ``crystallize.testing.StoreConformance``, run here on both; the rest are the engine
on the backend: S3 options, the step cache, artifacts and run records, and process-pool
workers writing straight to the store.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from forgery import Booby
from s3_server import list_keys, make_store_root, moto_endpoint, new_bucket, s3_bucket, split_s3  # noqa: F401

from crystallize import (
    ArtifactPlugin,
    Experiment,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    data_source,
    load_run,
    pipeline_step,
    treatment,
)
from crystallize.store import Store, layout
from crystallize.store.codec import MAGIC, CacheEntry, CorruptEntry, decode, encode
from crystallize.store.records import list_versions, load_outcomes
from crystallize.testing import StoreConformance

CALLS = "calls.log"


# ------------------------------------------------------------------ backends


# store_root (local and S3) comes from conftest.py; the conformance class below uses make_store_root.


def is_s3(root: str) -> bool:
    return root.startswith("s3://")


def everything(root: str, tmp_path: Path) -> list[str]:
    """Every file this test could have written to: all of ``tmp_path``, or the whole bucket."""
    if is_s3(root):
        bucket, _ = split_s3(root)
        return [f"{bucket}/{key}" for key in list_keys(os.environ["CRYSTALLIZE_S3_ENDPOINT"], bucket)]
    return sorted(str(p) for p in tmp_path.rglob("*") if not p.is_dir())


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
    assert result.errors == {}, {c: {r: str(e) for r, e in errs.items()} for c, errs in result.replicate_errors.items()}


def hits(result: Any, step: str, condition: str = "baseline") -> int:
    return result.provenance["steps"][condition][step]["cache_hits"]


def experiment(root: str | None, *steps: Any, name: str = "store_exp", execution: Any = None, **kwargs: Any) -> Any:
    plugins: list[Any] = [execution or SerialExecution(progress=False)]
    if root is not None:
        plugins.append(ArtifactPlugin(root_dir=root))
    return Experiment(kwargs.pop("source", by_replicate()), Pipeline(list(steps)), plugins=plugins, name=name, **kwargs)


# ------------------------------------------------------------------ 1. the Store API (the shipped suite)


class TestStoreConformance(StoreConformance):
    """The backend-generic suite on a local folder and on S3."""

    @pytest.fixture(params=["local", "s3"])
    def store_root(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        return make_store_root(request, tmp_path)

    def written_paths(self, store_root: str, tmp_path: Path) -> list[str]:
        """On S3 the bucket as boto3 lists it, independently of the store's own client."""
        return everything(store_root, tmp_path)


# ------------------------------------------------------------------ 2. S3 options


def test_s3_options_in_the_uri(moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """S3 only: without ``CRYSTALLIZE_S3_ENDPOINT`` the endpoint comes from the URI's query string."""
    monkeypatch.delenv("CRYSTALLIZE_S3_ENDPOINT")
    host_port = moto_endpoint.split("://", 1)[1]
    store = Store(f"s3://{s3_bucket}/q/root?endpoint_override={host_port}&scheme=http&region=us-east-1")
    store.write_bytes("x/y.bin", b"via the query string")
    assert store.read_bytes("x/y.bin") == b"via the query string"
    assert store.uri("x/y.bin") == f"s3://{s3_bucket}/q/root/x/y.bin"
    assert "q/root/x/y.bin" in list_keys(moto_endpoint, s3_bucket)


# ------------------------------------------------------------------ 3. the step cache on the backend


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
    assert sorted(e.path for e in second.artifact_copies("kind.txt")) == sorted(
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


# ------------------------------------------------------------------ 4. artifacts and run records


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
        paths = sorted(e.path for e in result.artifact_entries[condition])
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


# ------------------------------------------------------------------ 5. process-pool workers


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
