"""Run records never execute code, lose nothing silently, and name what is damaged.

Outcome parts are Arrow IPC with a fixed schema behind a SHA-256 and an HMAC (the signing
key); a forged part (a pickle that runs code, a part with altered numbers) is skipped with
a warning naming it and its replicates rerun on resume. A damaged ``plan.json``, ``run.json``,
``metrics.parquet`` or a lost outcome part is named, and the rest of the store still lists.
Local folder and S3 (moto) where it is cheap; the command line in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from s3_server import moto_endpoint  # noqa: F401 - the S3 side of store_root
from test_cli import cli, ok

from crystallize import ArtifactPlugin, Experiment, Pipeline, SerialExecution, data_source, load_run, pipeline_step
from crystallize import treatment as make_treatment
from crystallize.errors import CorruptRecordError, CrystallizeError
from crystallize.plugins.artifacts import load_metrics_table
from crystallize.store import Store, layout
from crystallize.store.records import decode_part, encode_part, signing_key

CALLS = "calls.log"
NAME = "rec"


# ------------------------------------------------------------------ building blocks


@data_source
def source(ctx: Any) -> int:
    return ctx["replicate"]


@pipeline_step
def measure(data: int, ctx: Any, delta: int = 0) -> int:
    with open(CALLS, "a", encoding="utf-8") as handle:
        handle.write(f"{ctx['condition']} {ctx['replicate']}\n")
    ctx.metrics.add("value", float(data + delta) + float(ctx.rng.random()))
    ctx.metrics.add("count", data + delta)
    return data


def experiment(root: str, *steps: Any, replicates: int = 4, name: str = NAME) -> Experiment:
    return Experiment(
        source(),
        Pipeline(list(steps) or [measure()]),
        plugins=[SerialExecution(progress=False), ArtifactPlugin(root_dir=root)],
        name=name,
        replicates=replicates,
        treatments=[make_treatment("hot", {"delta": 10})],
    )


def executions() -> list[tuple[str, int]]:
    path = Path(CALLS)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [(c, int(r)) for c, r in (line.split() for line in lines)]


def folder(version: int = 0, name: str = NAME) -> str:
    return f"{layout.version_dir(name, version)}/{layout.OUTCOMES}"


def part_names(store: Store, version: int = 0, name: str = NAME) -> list[str]:
    return sorted(n for n in store.list_dir(folder(version, name)) if n.startswith("part-"))


def values(result: Any) -> dict[str, dict[str, list[Any]]]:
    return {c: m.metrics for c, m in result.metrics.conditions()}


def tasks_of(result: Any) -> set[tuple[str, int]]:
    return {(c, r) for c, m in result.metrics.conditions() for reps in m.replicates.values() for r in reps}


def no_errors(result: Any) -> None:
    assert result.errors == {}, {c: {r: str(e) for r, e in errs.items()} for c, errs in result.replicate_errors.items()}


class Trap:
    """Unpickling this writes ``marker`` (and gives an empty list of outcomes, as a harmless part would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> Any:
        return (eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('pwned') and []",))


def trap_payload(marker: Path) -> bytes:
    payload = pickle.dumps(Trap(marker), protocol=5)
    pickle.loads(payload)  # the trap works: unpickling it does write the marker ...
    assert marker.exists(), "the trap never fired, so the test would prove nothing"
    marker.unlink()  # ... so from here on a marker means something unpickled a part
    return payload


def old_format_part(payload: bytes) -> bytes:
    """A part as Crystallize wrote them before: magic, SHA-256, pickle (a forger recomputes the hash)."""
    return b"CRYSTALLIZE-OUTCOMES-1\n" + hashlib.sha256(payload).digest() + payload


def new_magic_part(payload: bytes) -> bytes:
    """Today's layout around a pickle, with a correct checksum and no signature."""
    core = json.dumps({"format": "arrow-ipc-stream", "rows": 0}, sort_keys=True).encode()
    header = {"format": "arrow-ipc-stream", "rows": 0, "sha256": hashlib.sha256(core + payload).hexdigest()}
    header_bytes = json.dumps(header, sort_keys=True).encode()
    return b"CRYSTALLIZE-OUTCOMES-2\n" + struct.pack("<I", len(header_bytes)) + header_bytes + payload


def arrow_body(blob: bytes) -> pa.Table:
    """The Arrow IPC stream inside a part (behind magic, header length and header)."""
    magic = b"CRYSTALLIZE-OUTCOMES-2\n"
    assert blob.startswith(magic), blob[:40]
    (length,) = struct.unpack_from("<I", blob, len(magic))
    return pa.ipc.open_stream(pa.BufferReader(blob[len(magic) + 4 + length :])).read_all()


# ------------------------------------------------------------------ 1. records never execute code


def test_a_forged_pickle_part_is_never_executed_and_its_replicates_rerun(
    store_root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = experiment(store_root).run()
    no_errors(first)
    store = Store(store_root)
    # An interrupted run (no run.json): every part in the folder is read, forged ones included.
    for name in (layout.RUN_RECORD, layout.METRICS):
        store.delete(layout.run_file(NAME, 0, name))
    names = part_names(store)
    victim = names[0]
    lost = {(o.condition, o.replicate) for o in decode_part(store.read_bytes(f"{folder()}/{victim}"), signing_key())}
    assert 0 < len(lost) < 8
    marker = tmp_path / "pwned"
    payload = trap_payload(marker)
    store.delete(f"{folder()}/{victim}")
    stem = victim.rsplit(".", 1)[0]
    forged = {
        f"{stem}.pkl": old_format_part(payload),  # the old format, in place of a real part
        "part-99999999999999999998-forged01.arrow": old_format_part(payload),
        "part-99999999999999999999-forged02.arrow": new_magic_part(payload),
    }
    for name, blob in forged.items():
        store.write_bytes(f"{folder()}/{name}", blob)

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        loaded = load_run(f"{store_root}/{NAME}/v0")
    assert not marker.exists(), "load_run unpickled a forged outcome part"
    assert tasks_of(loaded) == tasks_of(first) - lost
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in forged:
        assert any(name in m for m in messages), (name, messages)
    assert any(f"{stem}.pkl" in m and "older version" in m for m in messages), messages
    assert any(f"{stem}.pkl" in d for d in loaded.provenance["damaged"])

    listing = ok(cli("runs", "--data", store_root, cwd=tmp_path))
    assert not marker.exists(), "crystallize runs unpickled a forged outcome part"
    assert "damaged" in listing.stdout and f"{stem}.pkl" in listing.stdout
    shown = ok(cli("show", NAME, "--data", store_root, cwd=tmp_path))
    assert not marker.exists(), "crystallize show unpickled a forged outcome part"
    assert "damaged" in shown.stdout

    ran_before = len(executions())
    resumed = experiment(store_root).run(strategy="resume")
    assert not marker.exists(), "resume unpickled a forged outcome part"
    assert sorted(executions()[ran_before:]) == sorted(lost), "resume must rerun exactly the forged part's replicates"
    no_errors(resumed)
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 8 - len(lost)}
    assert values(resumed) == values(first)
    # Finished again: the run is the parts run.json names; the forged ones are not among them.
    again = ok(cli("runs", "--data", store_root, cwd=tmp_path))
    assert "finished" in again.stdout and "8/8" in again.stdout and "damaged" not in again.stdout
    assert not marker.exists()


def test_a_part_with_altered_numbers_fails_its_checksum_or_signature_and_is_rerun(
    store_root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYSTALLIZE_CACHE_KEY", "the-key-of-this-test-" + "k" * 20)
    first = experiment(store_root).run()
    no_errors(first)
    store = Store(store_root)
    store.delete(layout.run_file(NAME, 0, layout.RUN_RECORD))  # interrupted: resume decides what to reuse
    names = part_names(store)
    assert len(names) >= 2 and all(n.endswith(".arrow") for n in names)
    flipped, resigned = names[0], names[-1]

    # (a) the same layout with one number changed in the Arrow body: the checksum no longer matches
    blob = store.read_bytes(f"{folder()}/{flipped}")
    [outcome] = decode_part(blob, signing_key())[:1]
    text = json.dumps(outcome.metrics["count"], separators=(",", ":")).encode()
    assert blob.count(text) >= 1
    altered = text.replace(b"0", b"7") if b"0" in text else text[:-2] + b"7]"
    assert len(altered) == len(text) and altered != text
    store.write_bytes(f"{folder()}/{flipped}", blob.replace(text, altered, 1))

    # (b) a forger re-encodes the outcomes with other numbers and a correct checksum, but not our key
    outcomes = decode_part(store.read_bytes(f"{folder()}/{resigned}"), signing_key())
    for item in outcomes:
        item.metrics = {name: [v * 0 - 1 for v in vals] for name, vals in item.metrics.items()}
    store.write_bytes(f"{folder()}/{resigned}", encode_part(outcomes, b"not-the-key-" + b"x" * 30))
    lost_a = {(o.condition, o.replicate) for o in decode_part(blob, signing_key())}
    lost_b = {(o.condition, o.replicate) for o in outcomes}
    lost = lost_a | lost_b

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        loaded = load_run(f"{store_root}/{NAME}/v0")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(flipped in m and "checksum" in m for m in messages), messages
    assert any(resigned in m and "sign" in m for m in messages), messages
    assert tasks_of(loaded) == tasks_of(first) - lost
    for _, metrics in loaded.metrics.conditions():
        assert all(v >= 0 for v in metrics.metrics.get("count", [])), "altered numbers were read back"

    ran_before = len(executions())
    resumed = experiment(store_root).run(strategy="resume")
    assert sorted(executions()[ran_before:]) == sorted(lost)
    no_errors(resumed)
    assert values(resumed) == values(first)


def test_parts_are_arrow_with_a_fixed_schema(tmp_path: Path) -> None:
    experiment(str(tmp_path / "data")).run()
    store = Store(str(tmp_path / "data"))
    for name in part_names(store):
        assert name.endswith(".arrow")
        table = arrow_body(store.read_bytes(f"{folder()}/{name}"))
        assert table.column_names[:4] == ["condition", "replicate", "seed", "seconds"]
        assert table.schema.field("metrics").type == pa.list_(
            pa.struct([("name", pa.string()), ("values", pa.string())])
        )
        assert table.schema.field("error_exception_types").type == pa.list_(pa.string())


# ------------------------------------------------------------------ 2. metric values round-trip exactly


SAMPLES: dict[str, Any] = {
    "int": 3,
    "big_int": 2**80 + 1,
    "negative_int": -7,
    "float": 0.1,
    "neg_zero": -0.0,
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "integral_float": 2.0,
    "true": True,
    "false": False,
    "string": 'zé \u2603 "quoted" \\ back',
    "none": None,
    "list": [1, 2.5, "x", None, [True, [math.nan]]],
    "dict": {"a": 1, "b": [1.5, {"c": None}], "n": math.inf},
    "tuple": (1, "two", (3.0,)),
    "int_keys": {1: "one", 2.5: "two and a half", (1, 2): [3]},
    "tag_lookalike": {"__crystallize__": "tuple", "items": [1, 2]},
    "empty": [],
    "np_float64": np.float64(1.25),
    "np_float32": np.float32(0.1),
    "np_float16": np.float16(0.5),
    "np_int64": np.int64(-(2**62)),
    "np_int8": np.int8(-3),
    "np_uint64": np.uint64(2**64 - 1),
    "np_bool": np.bool_(True),
    "np_nan": np.float64("nan"),
    "np_str": np.str_("numpy string"),
    "np_array": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
    "np_int_array": np.array([[1, -2], [3, 2**40]], dtype=np.int64),
    "nested_numpy": {"mean": np.float64(0.5), "per_class": [np.int32(1), np.int32(2)]},
}


@pipeline_step
def every_kind(data: int, ctx: Any) -> int:
    for name, value in SAMPLES.items():
        ctx.metrics.add(name, value)
    ctx.metrics.add("value", data)  # several values of one metric, in order
    ctx.metrics.add("value", data + 0.5)
    return data


def assert_exact(got: Any, expected: Any, where: str = "") -> None:
    assert type(got) is type(expected), (where, type(got), type(expected))
    if isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        np.testing.assert_array_equal(got, expected)
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_exact(g, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_exact(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (float, np.floating)) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, (where, got, expected)
        if isinstance(expected, float) and expected == 0:
            assert math.copysign(1, got) == math.copysign(1, expected), where


def test_metric_values_of_every_kind_round_trip_exactly(store_root: str) -> None:
    live = experiment(store_root, every_kind(), replicates=2).run()
    no_errors(live)
    loaded = load_run(f"{store_root}/{NAME}/v0")
    no_errors(loaded)
    for condition, metrics in live.metrics.conditions():
        reloaded = dict(loaded.metrics.conditions())[condition]
        assert reloaded.replicates == metrics.replicates
        assert_exact(reloaded.metrics, metrics.metrics, condition)
    assert_exact(live.metrics.baseline.metrics["tuple"][0], SAMPLES["tuple"])  # the live run keeps the types too
    store = Store(store_root)
    for name in part_names(store):
        assert not store.read_bytes(f"{folder()}/{name}").startswith(b"CRYSTALLIZE-OUTCOMES-1")
        arrow_body(store.read_bytes(f"{folder()}/{name}"))


class Opaque:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    __hash__ = object.__hash__


@pipeline_step
def unstorable(data: int, ctx: Any) -> int:
    ctx.metrics.add("value", float(data))
    if ctx["condition"] == "hot" and ctx["replicate"] == 1:
        ctx.metrics.add("lock", threading.Lock())
    if ctx["condition"] == "baseline" and ctx["replicate"] == 2:
        ctx.metrics.add("model", [1, {"inner": Opaque()}])
    return data


def test_an_unstorable_metric_value_fails_its_replicate_and_the_run_finishes(store_root: str) -> None:
    result = experiment(store_root, unstorable(), replicates=3).run()
    failed = {(c, r): e for c, errs in result.replicate_errors.items() for r, e in errs.items()}
    assert sorted(failed) == [("baseline", 2), ("hot", 1)]
    lock, model = failed[("hot", 1)], failed[("baseline", 2)]
    for error, metric, kind in ((lock, "lock", "lock"), (model, "model", "Opaque")):
        text = str(error)
        assert f"metric '{metric}'" in text and kind in text, text
        assert "condition 'hot'" in text if error is lock else "condition 'baseline'" in text
        assert "replicate 1" in text if error is lock else "replicate 2" in text
        assert error.stage == "metrics"
    assert result.provenance["replicates_completed"] == {"baseline": 2, "hot": 2}
    assert result.metrics.baseline.replicates["value"] == [0, 1]
    assert Store(store_root).exists(layout.run_file(NAME, 0, layout.RUN_RECORD)), "the run did not finish"

    loaded = load_run(f"{store_root}/{NAME}/v0")
    assert {c: {r: (e.stage, e.message) for r, e in errs.items()} for c, errs in loaded.replicate_errors.items()} == {
        c: {r: (e.stage, e.message) for r, e in errs.items()} for c, errs in result.replicate_errors.items()
    }
    assert values(loaded) == values(result)
    record = json.loads(Store(store_root).read_bytes(layout.run_file(NAME, 0, layout.RUN_RECORD)))
    assert set(record["errors"]) == {"baseline", "hot"}


# ------------------------------------------------------------------ 3. damage stays local and is named


def test_truncated_plan_and_run_records_are_listed_as_damaged(tmp_path: Path) -> None:
    root = str(tmp_path / "data")
    for _ in range(3):
        no_errors(experiment(root).run())
    plan = tmp_path / "data" / NAME / "v0" / layout.PLAN
    plan.write_bytes(plan.read_bytes()[:25])
    record = tmp_path / "data" / NAME / "v1" / layout.RUN_RECORD
    record.write_bytes(record.read_bytes()[:40])

    listing = ok(cli("runs", cwd=tmp_path))
    lines = listing.stdout.splitlines()
    row = {v: next(line for line in lines if f" v{v} " in line) for v in range(3)}
    assert "damaged" in row[0] and "plan.json" in row[0], listing.stdout
    assert "damaged" in row[1] and "run.json" in row[1], listing.stdout
    assert "finished" in row[2] and "8/8" in row[2], listing.stdout
    assert f"{NAME} v0: plan.json is damaged" in listing.stdout  # short lines: no wrapping inside
    assert f"{NAME} v1: run.json is damaged" in listing.stdout

    with pytest.raises(CorruptRecordError, match=r"v0/plan\.json is damaged"):
        load_run(f"{root}/{NAME}/v0")
    survived = load_run(f"{root}/{NAME}/v1")  # the outcomes are intact: an unfinished, damaged run
    assert survived.provenance["finished"] is False
    assert any("run.json" in d for d in survived.provenance["damaged"])
    assert tasks_of(survived) == {(c, r) for c in ("baseline", "hot") for r in range(4)}
    shown = cli("show", f"{NAME}/v0", cwd=tmp_path)
    assert shown.returncode == 1 and "plan.json is damaged" in shown.stderr, shown.stderr


def test_a_truncated_metrics_parquet_is_named(store_root: str, tmp_path: Path) -> None:
    no_errors(experiment(store_root).run())
    store = Store(store_root)
    relative = layout.run_file(NAME, 0, layout.METRICS)
    store.write_bytes(relative, store.read_bytes(relative)[:100])
    with pytest.raises(CrystallizeError, match=r"metrics\.parquet is damaged"):
        load_metrics_table(f"{store_root}/{NAME}/v0")
    loaded = load_run(f"{store_root}/{NAME}/v0")  # rebuilt from the outcome parts, with the damage named
    assert any(d.startswith("metrics.parquet") for d in loaded.provenance["damaged"])
    listing = ok(cli("runs", "--data", store_root, cwd=tmp_path))
    assert "damaged" in listing.stdout and "metrics.parquet" in listing.stdout, listing.stdout


def test_a_deleted_outcome_part_shows_in_the_counts(store_root: str, tmp_path: Path) -> None:
    no_errors(experiment(store_root, replicates=10).run())
    store = Store(store_root)
    names = part_names(store)
    assert len(names) >= 2
    lost = decode_part(store.read_bytes(f"{folder()}/{names[0]}"), signing_key())
    store.delete(f"{folder()}/{names[0]}")
    remaining = 20 - len(lost)

    listing = ok(cli("runs", "--data", store_root, cwd=tmp_path))
    row = next(line for line in listing.stdout.splitlines() if " v0 " in line)
    assert "damaged" in row and f"{remaining}/20" in row and "finished" not in row, listing.stdout
    assert f"{NAME} v0: outcomes/{names[0]}" in listing.stdout and "is missing" in listing.stdout

    loaded = load_run(f"{store_root}/{NAME}/v0")
    assert sum(loaded.provenance["replicates_completed"].values()) == remaining
    assert any(names[0] in d and "missing" in d for d in loaded.provenance["damaged"])
    shown = ok(cli("show", NAME, "--data", store_root, cwd=tmp_path))
    assert "damaged" in shown.stdout and names[0] in shown.stdout

    ran_before = len(executions())
    experiment(store_root, replicates=10).run(strategy="resume")
    assert sorted(executions()[ran_before:]) == sorted((o.condition, o.replicate) for o in lost)
    again = ok(cli("runs", "--data", store_root, cwd=tmp_path))
    assert "finished" in again.stdout and "20/20" in again.stdout and "damaged" not in again.stdout
