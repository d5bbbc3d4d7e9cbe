"""Cache entry encoding: Arrow IPC for tables, arrays and DataFrames; cloudpickle for the rest.

One entry is one object: ``MAGIC | header length | header JSON | body``. The header
says how each part of the body is encoded and carries a SHA-256 of header+body
and, when written with a key, an HMAC-SHA256 of header+body (every part, Arrow ones
included: the entry is signed as a whole). Nothing in the body is decoded (and
nothing is unpickled) before those check out. The step cache always writes and
reads with a key (``CRYSTALLIZE_CACHE_KEY`` or the per-user key file, see
:mod:`crystallize.store.locations`), so an unsigned entry is never loaded there;
``decode(blob)`` without a key only checks integrity and is for tools and tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..errors import CorruptEntry as CorruptEntry  # defined with the other errors; importable from here too
from ..errors import UntrustedEntry

MAGIC = b"CRYSTALLIZE-CACHE-3\n"


@dataclass
class CacheEntry:
    """A step's result and everything a hit must replay to look exactly like a miss."""

    data: Any
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    artifacts: list[tuple[str, bytes]] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)  # context keys the step read in its body
    rng: bool = False  # drew from ctx.rng
    global_rng: bool = False  # drew from the global random/numpy.random generators
    added: dict[str, Any] = field(default_factory=dict)  # context keys the step added
    rng_state: dict[str, Any] | None = None  # the global generators' state after the step

    def replay_fields(self) -> dict[str, Any]:
        return {
            "reads": list(self.reads),
            "rng": self.rng,
            "global_rng": self.global_rng,
            "added": self.added,
            "rng_state": self.rng_state,
        }


def _encode_data(data: Any) -> tuple[dict[str, Any], bytes]:
    """(description, bytes) of ``data``, Arrow where the type allows it."""
    module = type(data).__module__ or ""
    try:
        if module == "numpy" and _plain_native_array(data):
            import numpy as np
            import pyarrow as pa

            sink = pa.BufferOutputStream()
            pa.ipc.write_tensor(pa.Tensor.from_numpy(np.ascontiguousarray(data)), sink)
            return {"encoding": "arrow-tensor"}, sink.getvalue()
        if module.startswith("pyarrow"):
            import pyarrow as pa

            if isinstance(data, (pa.Table, pa.RecordBatch)):
                kind = "arrow-table" if isinstance(data, pa.Table) else "arrow-batch"
                return {"encoding": kind}, _ipc_stream(data)
        if module.startswith("pandas") and type(data).__name__ == "DataFrame":
            import pyarrow as pa

            return {"encoding": "arrow-pandas"}, _ipc_stream(pa.Table.from_pandas(data, preserve_index=True))
    except Exception:  # noqa: BLE001 - a type Arrow cannot hold goes through cloudpickle
        pass
    return {"encoding": "pickle"}, cloudpickle.dumps(data)


def _plain_native_array(data: Any) -> bool:
    """Arrow tensors hold plain ndarrays of native-endian numbers; subclasses and
    big-endian arrays would come back as something else, so they take the pickle path."""
    import numpy as np

    return type(data) is np.ndarray and data.ndim > 0 and data.dtype.kind in "iuf" and data.dtype.isnative


def _ipc_stream(table: Any) -> Any:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue()


def _decode_data(description: dict[str, Any], buffer: Any) -> Any:
    encoding = description["encoding"]
    if encoding == "pickle":
        return cloudpickle.loads(buffer)
    import pyarrow as pa

    if encoding == "arrow-tensor":
        # A copy, so a hit gives the same writable array a miss does (steps may modify it in place).
        return pa.ipc.read_tensor(pa.BufferReader(buffer)).to_numpy().copy()
    table = pa.ipc.open_stream(pa.BufferReader(buffer)).read_all()
    if encoding == "arrow-table":
        return table
    if encoding == "arrow-batch":
        return (
            table.combine_chunks().to_batches()[0]
            if table.num_rows
            else pa.RecordBatch.from_pylist([], schema=table.schema)
        )
    if encoding == "arrow-pandas":
        return table.to_pandas()
    raise CorruptEntry(f"unknown data encoding {encoding!r}")


def _json_exact(value: Any, depth: int = 0) -> bool:
    """Whether JSON gives ``value`` back with the same types (tuples, NumPy scalars and int keys would not)."""
    if depth > 50:
        return False
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return True
    if kind is list:
        return all(_json_exact(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v, depth + 1) for k, v in value.items())
    return False


def _encode_metrics(values: dict[str, Any]) -> tuple[str, bytes]:
    if _json_exact(values):
        return "json", json.dumps(values, allow_nan=True).encode()
    return "pickle", cloudpickle.dumps(values)


def encode_parts(entry: CacheEntry, key: bytes | None = None) -> list[Any]:
    """The entry as a list of buffers to write one after another (no copy of the payload)."""
    data_description, data_bytes = _encode_data(entry.data)
    metrics_encoding, metrics_bytes = _encode_metrics(entry.metrics)
    replay_encoding, replay_bytes = _encode_metrics(entry.replay_fields())
    body: list[Any] = [data_bytes, metrics_bytes, replay_bytes, *(blob for _, blob in entry.artifacts)]
    core = {
        "data": {**data_description, "length": len(data_bytes)},
        "metrics": {"encoding": metrics_encoding, "length": len(metrics_bytes)},
        "replay": {"encoding": replay_encoding, "length": len(replay_bytes)},
        "artifacts": [{"name": name, "length": len(blob)} for name, blob in entry.artifacts],
    }
    canonical = json.dumps(core, sort_keys=True).encode()
    digest = hashlib.sha256(canonical)
    signature = hmac.new(key, canonical, hashlib.sha256) if key is not None else None
    for part in body:
        digest.update(part)
        if signature is not None:
            signature.update(part)
    header = dict(core, sha256=digest.hexdigest())
    if signature is not None:
        header["hmac"] = signature.hexdigest()
    header_bytes = json.dumps(header, sort_keys=True).encode()
    return [MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes, *body]


def encode(entry: CacheEntry, key: bytes | None = None) -> bytes:
    return b"".join(bytes(part) if not isinstance(part, bytes) else part for part in encode_parts(entry, key))


def decode(blob: bytes, key: bytes | None = None) -> CacheEntry:
    """The entry in ``blob``; raises :class:`CorruptEntry` unless it is intact (and signed by ``key``)."""
    view = memoryview(blob)
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < len(MAGIC) + 4:
        raise CorruptEntry("not a cache entry (bad magic)")
    (header_length,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(bytes(view[start : start + header_length]))
        sha = header.pop("sha256")
        signature = header.pop("hmac", None)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"unreadable header: {exc}") from exc
    body = view[start + header_length :]
    canonical = json.dumps(header, sort_keys=True).encode()
    digest = hashlib.sha256()
    digest.update(canonical)
    digest.update(body)
    if not hmac.compare_digest(digest.hexdigest(), str(sha)):
        raise CorruptEntry("checksum mismatch (truncated or altered)")
    if key is not None:
        if signature is None:
            raise UntrustedEntry("the entry has no signature (written without a cache key); not trusted")
        expected = hmac.new(key, canonical, hashlib.sha256)
        expected.update(body)
        if not hmac.compare_digest(expected.hexdigest(), str(signature)):
            raise UntrustedEntry("signature does not match the cache key; entry not trusted")
    try:
        offset = 0
        data_length = int(header["data"]["length"])
        data = _decode_data(header["data"], body[offset : offset + data_length])
        offset += data_length
        metrics_length = int(header["metrics"]["length"])
        metrics_bytes = bytes(body[offset : offset + metrics_length])
        offset += metrics_length
        metrics = _decode_mapping(header["metrics"]["encoding"], metrics_bytes)
        replay_length = int(header["replay"]["length"])
        replay = _decode_mapping(header["replay"]["encoding"], bytes(body[offset : offset + replay_length]))
        offset += replay_length
        artifacts = []
        for item in header["artifacts"]:
            length = int(item["length"])
            artifacts.append((str(item["name"]), bytes(body[offset : offset + length])))
            offset += length
    except CorruptEntry:
        raise
    except Exception as exc:
        raise CorruptEntry(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    return CacheEntry(
        data=data,
        metrics=metrics,
        artifacts=artifacts,
        reads=[str(k) for k in replay["reads"]],
        rng=bool(replay["rng"]),
        global_rng=bool(replay["global_rng"]),
        added=dict(replay["added"]),
        rng_state=replay["rng_state"],
    )


def _decode_mapping(encoding: str, payload: bytes) -> Any:
    return json.loads(payload) if encoding == "json" else cloudpickle.loads(payload)
