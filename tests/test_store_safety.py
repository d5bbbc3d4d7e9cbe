"""Nothing lost, nothing run that should not be, nothing exposed: the store's safety properties.

* Python objects in the step cache are signed by default (a per-user key file, or
  ``CRYSTALLIZE_CACHE_KEY``); a forged or unsigned entry is never unpickled.
* The key is read on the driver, travels in the run spec, and is never written to a store.
* A local store never follows a symbolic link out of its root.
* Local writes are fsynced (file before the rename, folder after).
* Half-written temporaries of killed writers are removed by the next run; fresh ones stay.

Real files and a real S3 (moto on loopback) where the property applies to object stores.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from forgery import Booby
from s3_server import list_keys, moto_endpoint, split_s3  # noqa: F401

from crystallize import (
    ArtifactPlugin,
    Experiment,
    ParallelExecution,
    Pipeline,
    SerialExecution,
    data_source,
    pipeline_step,
)
from crystallize.cache import StepCache
from crystallize.engine.replicate import PreparedSpec
from crystallize.errors import CacheKeyError, CrystallizeError, StorePathError
from crystallize.store import Store
from crystallize.store.codec import CacheEntry, decode, encode
from crystallize.store.locations import cache_key_path, cache_signing_key

CALLS = "calls.log"


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


@pipeline_step(cacheable=True)
def guarded(data: int, ctx: Any) -> int:
    _bump("guarded")
    ctx.metrics.add("value", data + 100)
    ctx.artifacts.add("note.txt", f"replicate {data}".encode())
    return data + 100


@pipeline_step(cacheable=True)
def quiet(data: int, ctx: Any) -> int:
    """``guarded`` without the call log (a Ray worker's working folder is not the test's)."""
    ctx.metrics.add("value", data + 100)
    return data + 100


def experiment(
    root: str, *, replicates: int = 1, execution: Any = None, name: str = "safe_exp", step: Any = guarded
) -> Experiment:
    plugins: list[Any] = [execution or SerialExecution(progress=False), ArtifactPlugin(root_dir=root)]
    return Experiment(by_replicate(), Pipeline([step()]), plugins=plugins, name=name, replicates=replicates)


def no_errors(result: Any) -> None:
    assert result.errors == {}, {c: {r: str(e) for r, e in errs.items()} for c, errs in result.replicate_errors.items()}


def hits(result: Any, step: str = "guarded") -> int:
    return result.provenance["steps"]["baseline"][step]["cache_hits"]


def entries(cache_root: str) -> list[str]:
    """The cache entries (not read-set files, not temporaries)."""
    return sorted(
        p
        for p in Store(cache_root).walk_files("")
        if not p.rsplit("/", 1)[-1].startswith(".") and not p.endswith("/reads.json")
    )


def is_s3(root: str) -> bool:
    return root.startswith("s3://")


def every_stored_byte(root: str, tmp_path: Path) -> list[tuple[str, bytes]]:
    """(name, content) of everything under ``tmp_path`` or, on S3, the whole bucket."""
    found = [(str(p), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    if is_s3(root):
        bucket, _ = split_s3(root)
        store = Store(f"s3://{bucket}")
        for key in list_keys(os.environ["CRYSTALLIZE_S3_ENDPOINT"], bucket):
            if not key.endswith("/"):
                found.append((key, store.read_bytes(key)))
    return found


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No shared key: the default per-user key file, in this test's own config folder."""
    home = tmp_path / "config-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CRYSTALLIZE_CACHE_KEY", raising=False)
    return home


@pytest.fixture
def cache_root(store_root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    location = f"{store_root}/cache"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", location)
    return location


# ------------------------------------------------------------------ 1. signed by default


def test_forged_entries_are_never_unpickled_with_the_default_key(
    store_root: str, cache_root: str, config_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exp = experiment(store_root, replicates=3)
    no_errors(exp.run())
    assert calls("guarded") == 3
    found = entries(cache_root)
    assert len(found) == 3
    cache = Store(cache_root)

    # Forge every entry: well-formed, checksummed, and either unsigned or signed with another key.
    marker = tmp_path / "unpickled.marker"
    for index, entry in enumerate(found):
        forged = CacheEntry(data=Booby(str(marker)), metrics={"value": [-1]})
        cache.write_bytes(entry, encode(forged, None if index % 2 == 0 else b"somebody-else's-key"))

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        again = exp.run()
    no_errors(again)
    assert not marker.exists(), "a forged cache entry was unpickled"
    assert hits(again) == 0 and calls("guarded") == 6, "forged entries must be recomputed"
    assert sorted(again.metrics.baseline.metrics["value"]) == [100, 101, 102]
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING and "untrusted" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]  # once per run, not once per replicate
    key_file = config_home / "crystallize" / "cache.key"
    assert key_file.is_file(), "no per-user key was made"
    key = key_file.read_bytes().strip()
    for entry in found:
        decode(cache.read_bytes(entry), key)  # rewritten, signed again
    assert hits(exp.run()) == 3 and calls("guarded") == 6


def test_key_file_is_private_and_made_once(config_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(cache_key_path())
    assert path == config_home / "crystallize" / "cache.key"
    key = cache_signing_key()
    assert len(key) >= 32 and path.read_bytes().strip() == key
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert cache_signing_key() == key, "a second call made a new key"
    assert [p.name for p in path.parent.iterdir()] == ["cache.key"], "a temporary file was left behind"

    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "shared cluster key")
    assert cache_signing_key() == b"shared cluster key"
    monkeypatch.delenv("CRYSTALLIZE_CACHE_KEY")

    if os.name == "posix":
        path.chmod(0o644)
        with pytest.raises(CacheKeyError) as refused:
            cache_signing_key()
        assert isinstance(refused.value, CrystallizeError)
        assert str(path) in str(refused.value) and "chmod 600" in str(refused.value)
        # a run with a cacheable step refuses too, before anything runs
        with pytest.raises(CacheKeyError):
            experiment(str(config_home.parent / "data")).run()
        assert calls("guarded") == 0
        monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "shared cluster key")  # the override needs no file
        assert cache_signing_key() == b"shared cluster key"


def test_home_default_without_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Path(cache_key_path()) == tmp_path / "home" / ".config" / "crystallize" / "cache.key"


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_key_travels_in_the_spec_and_is_never_stored(
    store_root: str,
    cache_root: str,
    config_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executor: str,
) -> None:
    execution = (
        ParallelExecution(executor_type="process", max_workers=2, progress=False) if executor == "process" else None
    )
    exp = experiment(store_root, replicates=3, execution=execution)
    no_errors(exp.run())
    key = Path(cache_key_path()).read_bytes().strip()
    second = exp.run()
    no_errors(second)
    assert hits(second) == 3, "workers did not sign and verify with the driver's key"
    stored = every_stored_byte(store_root, tmp_path)
    assert any("cache" in name for name, _ in stored)
    for name, content in stored:
        if Path(name) == Path(cache_key_path()):
            continue
        assert key not in content and bytes.fromhex(key.decode()) not in content, f"the cache key is in {name}"


def test_ray_workers_get_the_key_through_the_object_store(
    tmp_path: Path, config_home: Path, monkeypatch: pytest.MonkeyPatch, ray_session: Any
) -> None:
    from crystallize_ray import RayExecution

    cache_root = tmp_path / "cache"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", str(cache_root))
    exp = experiment(str(tmp_path / "data"), replicates=3, execution=RayExecution(progress=False), step=quiet)
    no_errors(exp.run())
    second = exp.run()
    no_errors(second)
    assert hits(second, "quiet") == 3
    key = Path(cache_key_path()).read_bytes().strip()  # the driver's; the workers' environment has no such file
    found = entries(str(cache_root))
    assert len(found) == 3
    for entry in found:
        decode(Store(str(cache_root)).read_bytes(entry), key)  # signed on the workers with the driver's key
    for name, content in every_stored_byte(str(tmp_path / "data"), tmp_path):
        if Path(name) != Path(cache_key_path()):
            assert key not in content, f"the cache key is in {name}"


def test_workers_take_the_key_from_the_spec_only(
    tmp_path: Path, config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = experiment(str(tmp_path / "data"))
    from crystallize.engine.driver import setup_steps

    with setup_steps(exp.pipeline.steps, exp.initial_ctx, exp.id) as ctx:
        spec = exp._freeze_spec(ctx, mode="run", replicates=1)
    assert spec.cache_key == cache_signing_key()
    assert repr(spec.cache_key) not in repr(spec) and "cache_key" not in repr(spec)
    # a worker: another key in its environment and its own key file must not matter
    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "a worker's own environment")
    prepared = PreparedSpec.of(spec)
    assert isinstance(prepared.cache, StepCache) and prepared.cache.key == spec.cache_key
    assert spec.cache_key not in repr(prepared.cache).encode()


# ------------------------------------------------------------------ 2. the store stays in its root


def test_symlinked_experiment_folder_outside_the_root_is_refused(tmp_path: Path, config_home: Path) -> None:
    root = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "safe_exp").symlink_to(elsewhere, target_is_directory=True)
    exp = experiment(str(root), replicates=2)
    with pytest.raises(StorePathError) as refused:
        exp.run()
    assert str(root) in str(refused.value) and "safe_exp" in str(refused.value)
    assert list(elsewhere.rglob("*")) == [], "the run wrote through a link out of the store"
    store = Store(str(root))
    with pytest.raises(StorePathError):
        store.write_bytes("safe_exp/x.txt", b"x")
    with pytest.raises(StorePathError):
        store.read_bytes("safe_exp/x.txt")
    assert store.list_dir("") == [], "a link out of the root is listed"
    assert list(store.walk_files("")) == []


def test_links_inside_the_root_still_work(tmp_path: Path) -> None:
    real_root = tmp_path / "real"
    real_root.mkdir()
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(real_root, target_is_directory=True)  # the root itself may be a link
    store = Store(str(linked_root))
    store.write_bytes("a/b.txt", b"inside")
    (real_root / "alias").symlink_to(real_root / "a", target_is_directory=True)
    assert store.read_bytes("alias/b.txt") == b"inside"
    listed = list(store.walk_files(""))  # a folder reached twice (here through a link) is listed once
    assert len(listed) == 1 and listed[0] in ("a/b.txt", "alias/b.txt")


def test_symlinked_cache_entry_outside_the_root_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", str(cache_root))
    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "one key for this test")
    exp = experiment(str(tmp_path / "data"))
    no_errors(exp.run())
    (entry,) = entries(str(cache_root))
    # a valid, correctly signed entry, but outside the cache root, linked in place of the real one
    outside = tmp_path / "outside.entry"
    outside.write_bytes(encode(CacheEntry(data=-5, metrics={"value": [-5]}), b"one key for this test"))
    before = outside.read_bytes()
    (cache_root / entry).unlink()
    (cache_root / entry).symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        again = exp.run()
    no_errors(again)
    assert hits(again) == 0 and calls("guarded") == 2, "an entry outside the cache root counted as a hit"
    assert again.metrics.baseline.metrics["value"] == [100]
    assert outside.read_bytes() == before, "the cache wrote through a link out of its root"
    assert any("guarded" in r.getMessage() for r in caplog.records)


def test_a_folder_in_place_of_an_entry_is_a_miss_with_a_warning(
    store_root: str, cache_root: str, config_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exp = experiment(store_root, replicates=2)
    no_errors(exp.run())
    cache = Store(cache_root)
    found = entries(cache_root)
    assert len(found) == 2
    for entry in found:
        cache.delete(entry)
        cache.write_bytes(f"{entry}/inside", b"a folder now")
        assert cache.is_dir(entry)
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        again = exp.run()
    no_errors(again)
    assert hits(again) == 0 and calls("guarded") == 4
    assert sorted(again.metrics.baseline.metrics["value"]) == [100, 101]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "guarded" in r.getMessage()]
    assert len(warned) <= 2, warned  # once per kind (unreadable, not replaced), not once per replicate
    if not is_s3(store_root):  # (on S3 a "folder" is only a prefix: the entry's own key is simply absent)
        assert warned and all("folder" in m or "Is a directory" in m or "cannot be read" in m for m in warned)


# ------------------------------------------------------------------ 3. durable when the machine dies


def test_a_local_write_fsyncs_the_file_then_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path / "store"))
    store.write_bytes("warm/up.txt", b"folders exist")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def counting_fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def watching_replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "replace", watching_replace)
    store.write_bytes("warm/entry.bin", [b"part one, ", b"part two"])
    assert events == ["fsync-file", "rename", "fsync-dir"]
    assert store.read_bytes("warm/entry.bin") == b"part one, part two"
    events.clear()
    store.write_bytes("new/folder/file.bin", b"x")
    assert events.count("fsync-file") == 1 and events.count("fsync-dir") == 1


def test_object_store_writes_do_not_fsync(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from s3_server import new_bucket

    store = Store(f"s3://{new_bucket(moto_endpoint)}/root")
    counted: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (counted.append(fd), real_fsync(fd))[1])
    store.write_bytes("a/b.bin", b"remote")
    assert counted == [] and store.read_bytes("a/b.bin") == b"remote"


# ------------------------------------------------------------------ 4. half-written temporaries


def _plant(store: Store, relative: str) -> str:
    folder, _, name = relative.rpartition("/")
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    if store.is_local:
        path = Path(store.full_path(folder))
        path.mkdir(parents=True, exist_ok=True)
        (path / temporary.rsplit("/", 1)[1]).write_bytes(b"half written")
    else:
        with store.fs.open_output_stream(store.full_path(temporary)) as stream:
            stream.write(b"half written")
    return temporary


def _age(store: Store, relative: str, seconds: float) -> None:
    path = store.full_path(relative)
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("strategy", [None, "resume"])
def test_stale_temporaries_are_removed_and_fresh_ones_kept(
    store_root: str,
    cache_root: str,
    config_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str | None,
) -> None:
    exp = experiment(store_root, replicates=1)
    no_errors(exp.run())
    data, cache = Store(store_root), Store(cache_root)
    (entry,) = entries(cache_root)
    fingerprint = entry.split("/")[0]
    stale = [
        _plant(data, "safe_exp/v0/replicate_0/baseline/guarded/note.txt"),
        _plant(data, "safe_exp/v0/outcomes/part-x.pkl"),
    ]
    stale_cache = _plant(cache, f"{fingerprint}/{'0' * 32}")
    if is_s3(store_root):  # object stores keep their own modification time: age them by waiting
        monkeypatch.setenv("CRYSTALLIZE_TEMP_GRACE_SECONDS", "2")
        time.sleep(3)
    else:
        for relative in stale:
            _age(data, relative, 2 * 3600)
        _age(cache, stale_cache, 2 * 3600)
    fresh = _plant(data, "safe_exp/v0/replicate_0/baseline/guarded/other.txt")  # a concurrent writer's
    fresh_cache = _plant(cache, f"{fingerprint}/{'1' * 32}")
    cache.delete(entry)  # the next run writes the step's cache folder again

    result = exp.run(strategy=strategy) if strategy else exp.run()
    no_errors(result)
    for relative in stale:
        assert not data.exists(relative), f"stale {relative} was kept"
    if strategy is None:  # (a resume of a finished run runs nothing, so it writes no cache folder)
        assert not cache.exists(stale_cache), "a stale temporary in the step's cache folder was kept"
    assert data.exists(fresh), "a fresh temporary (a writer still busy) was removed"
    assert cache.exists(fresh_cache), "a fresh cache temporary was removed"
