"""Write/read cost of large cache entries through the real step-cache path, on this machine.

Run it with::

    python benchmarks/store_benchmark.py
    python benchmarks/store_benchmark.py --repeats 3 --values array table          # quicker
    python benchmarks/store_benchmark.py --dir /mnt/fast-disk                     # temp folder elsewhere

Values (each about 64 MiB of payload):

* ``array``       a NumPy float64 array of 8,388,608 elements (64 MiB);
* ``table``       a pyarrow Table of 4 float64 columns x 2,097,152 rows (64 MiB);
* ``table+str``   a pyarrow Table of 2 float64 columns and one 16-character string column,
                  2,097,152 rows (about 72 MiB of Arrow buffers).

Paths, each timed as write (``StepCache(Store(tmp)).save(step, key, CacheEntry(data))``)
and read (``StepCache.load(step, key)``):

* ``native``        the value itself, so the codec uses its Arrow IPC encoding
                    (``arrow-tensor`` for arrays, ``arrow-table`` for tables);
* ``pickle-dict``   the value wrapped in ``{"value": value}``, which the codec cloudpickles;
* ``pickle-list``   the value wrapped in ``[value]``, likewise cloudpickled;

each without and with ``CRYSTALLIZE_CACHE_KEY`` set (SHA-256 checksum only vs. checksum + HMAC).
For reference, plain ``pickle.dumps(value, protocol=5)`` / ``pickle.loads`` in memory (no store)
is timed too ("write" = dumps, "read" = loads).

Every number is the median of ``--repeats`` runs (after ``--warmup`` untimed runs). MB/s are
payload bytes (the value's ``nbytes``, 1 MB = 10**6 B) per second. "stored" is the size of the
object the store holds. "read-only" says whether the NumPy array handed back by a read is
read-only, i.e. a view of the IPC buffer that was read (zero-copy) rather than a fresh array;
it is "-" for tables. Every read is checked to equal the original (``np.array_equal`` /
``Table.equals``) and the script stops with an error if one does not. Reads come from a warm
page cache (the entry was just written); writes are not fsynced, like the store's own writes.

A second table breaks the native, unsigned path into its parts: ``codec.encode``,
``Store.write_bytes``, ``Store.read_bytes``, ``codec.decode``, the peak Python-heap growth during
``encode`` (tracemalloc; Arrow's own memory pool is not counted), and, as yardsticks, one
memcpy of the payload, one SHA-256 of it, and a single-call read of the same file with
``open_input_file`` (seekable, one allocation).

Everything is written inside a ``tempfile.TemporaryDirectory`` (under ``--dir`` if given) which
is removed at the end; nothing else is written. With the defaults the run takes 1-1.5 minutes
on a 2-CPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import pickle
import platform
import shlex
import statistics
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import crystallize
from crystallize.cache import StepCache
from crystallize.store import Store, layout
from crystallize.store.codec import KEY_ENV, MAGIC, CacheEntry, decode, encode

ARRAY_ELEMENTS = 8_388_608  # 64 MiB of float64
TABLE_ROWS = 2_097_152  # 4 float64 columns -> 64 MiB
VALUE_NAMES = ("array", "table", "table+str")
PATH_NAMES = ("native", "pickle-dict", "pickle-list")
EXPECTED_ENCODING = {
    ("array", "native"): "arrow-tensor",
    ("table", "native"): "arrow-table",
    ("table+str", "native"): "arrow-table",
}
BENCH_KEY = "store-benchmark-signing-key"


class BenchmarkFailure(RuntimeError):
    """A read did not give back what was written, or the codec took an unexpected path."""


# -- values ------------------------------------------------------------------------------------------


def make_value(name: str) -> Any:
    rng = np.random.default_rng(12345)
    if name == "array":
        return rng.random(ARRAY_ELEMENTS)
    if name == "table":
        return pa.table({f"f{i}": rng.random(TABLE_ROWS) for i in range(4)})
    if name == "table+str":
        labels = pc.utf8_lpad(pa.array(np.arange(TABLE_ROWS, dtype=np.int64)).cast(pa.string()), width=16, padding="x")
        return pa.table({"f0": rng.random(TABLE_ROWS), "f1": rng.random(TABLE_ROWS), "label": labels})
    raise ValueError(name)


def payload_bytes(value: Any) -> int:
    return int(value.nbytes)


def check_equal(original: Any, got: Any, what: str) -> None:
    if type(got) is not type(original):
        raise BenchmarkFailure(f"{what}: read back a {type(got).__name__}, wrote a {type(original).__name__}")
    if isinstance(original, np.ndarray):
        same = got.dtype == original.dtype and got.shape == original.shape and np.array_equal(got, original)
    else:
        same = got.equals(original)
    if not same:
        raise BenchmarkFailure(f"{what}: the value read back differs from the one written")


def read_only_flag(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "yes" if not value.flags.writeable else "no"
    return "-"


def wrap(path: str, value: Any) -> Any:
    if path == "native":
        return value
    if path == "pickle-dict":
        return {"value": value}
    if path == "pickle-list":
        return [value]
    raise ValueError(path)


def unwrap(path: str, data: Any, what: str) -> Any:
    if path == "native":
        return data
    if path == "pickle-dict" and isinstance(data, dict) and set(data) == {"value"}:
        return data["value"]
    if path == "pickle-list" and isinstance(data, list) and len(data) == 1:
        return data[0]
    raise BenchmarkFailure(f"{what}: read back {type(data).__name__}, not the {path} wrapper that was written")


# -- helpers -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def signing(enabled: bool) -> Iterator[None]:
    """Set (or clear) CRYSTALLIZE_CACHE_KEY while a StepCache is built; restore it afterwards."""
    previous = os.environ.get(KEY_ENV)
    if enabled:
        os.environ[KEY_ENV] = BENCH_KEY
    else:
        os.environ.pop(KEY_ENV, None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = previous


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def stored_encoding(store: Store, relative: str) -> tuple[str, bool]:
    """(data encoding, signed?) from the header of the stored entry; reads only the header."""
    with store.fs.open_input_file(store.full_path(relative)) as f:
        head = f.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            raise BenchmarkFailure(f"{relative}: stored object does not start with the cache magic")
        (length,) = struct.unpack_from("<I", head, len(MAGIC))
        header = json.loads(f.read(length))
    return str(header["data"]["encoding"]), "hmac" in header


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f}"


def fmt_rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:8.0f}" if seconds > 0 else "     inf"


# -- measurements ---------------------------------------------------------------------------------------


def bench_cache_path(
    root: str, value_name: str, value: Any, path: str, signed: bool, repeats: int, warmup: int
) -> dict[str, Any]:
    what = f"{value_name}/{path}/{'signed' if signed else 'unsigned'}"
    with signing(signed):
        cache = StepCache(Store(root))
    if (cache.key is not None) != signed:
        raise BenchmarkFailure(f"{what}: StepCache did not pick up the signing key setting")
    step = SimpleNamespace(name="bench", fingerprint=f"bench-{value_name.replace('+', '-')}-{path}-{int(signed)}")
    key = "0" * 64
    relative = layout.cache_entry(step.fingerprint, key)
    data = wrap(path, value)
    writes: list[float] = []
    reads: list[float] = []
    read_only = None
    for i in range(warmup + repeats):
        write_s, _ = timed(cache.save, step, key, CacheEntry(data))
        read_s, entry = timed(cache.load, step, key)
        if entry is None:
            raise BenchmarkFailure(f"{what}: load returned None (entry missing, corrupt or untrusted)")
        got = unwrap(path, entry.data, what)
        check_equal(value, got, what)
        flag = read_only_flag(got)
        if read_only is not None and flag != read_only:
            raise BenchmarkFailure(f"{what}: read-only flag changed between repeats")
        read_only = flag
        del entry, got
        if i >= warmup:
            writes.append(write_s)
            reads.append(read_s)
    encoding, has_hmac = stored_encoding(cache.store, relative)
    expected = EXPECTED_ENCODING.get((value_name, path), "pickle")
    if encoding != expected:
        raise BenchmarkFailure(f"{what}: stored with encoding {encoding!r}, expected {expected!r}")
    if has_hmac != signed:
        raise BenchmarkFailure(f"{what}: stored entry {'lacks' if signed else 'has'} an HMAC")
    size = cache.store.fs.get_file_info(cache.store.full_path(relative)).size
    cache.store.delete(relative)
    return {
        "path": f"StepCache {path}",
        "encoding": encoding,
        "signed": "yes" if signed else "no",
        "write": statistics.median(writes),
        "read": statistics.median(reads),
        "size": size,
        "read_only": read_only,
    }


def bench_plain_pickle(value: Any, repeats: int, warmup: int) -> dict[str, Any]:
    dumps: list[float] = []
    loads: list[float] = []
    size = 0
    read_only = None
    for i in range(warmup + repeats):
        dump_s, blob = timed(pickle.dumps, value, 5)
        load_s, got = timed(pickle.loads, blob)
        check_equal(value, got, "pickle.dumps/loads")
        size = len(blob)
        read_only = read_only_flag(got)
        del blob, got
        if i >= warmup:
            dumps.append(dump_s)
            loads.append(load_s)
    return {
        "path": "pickle.dumps/loads p5",
        "encoding": "(memory)",
        "signed": "-",
        "write": statistics.median(dumps),
        "read": statistics.median(loads),
        "size": size,
        "read_only": read_only,
    }


def read_whole_file(store: Store, relative: str) -> pa.Buffer:
    """The file in one seekable read (one allocation), for comparison with Store.read_bytes."""
    with store.fs.open_input_file(store.full_path(relative)) as f:
        return f.read_buffer()


def bench_breakdown(root: str, value_name: str, value: Any, repeats: int) -> dict[str, Any]:
    """The native unsigned path in parts, plus memcpy / SHA-256 / single-read yardsticks."""
    store = Store(root)
    relative = f"breakdown/{value_name.replace('+', '-')}"
    times: dict[str, list[float]] = {
        k: [] for k in ("encode", "write_bytes", "read_bytes", "decode", "memcpy", "sha256", "read_file")
    }
    entry = CacheEntry(value)
    for _ in range(repeats):
        t, blob = timed(encode, entry, None)
        times["encode"].append(t)
        t, _ = timed(store.write_bytes, relative, blob)
        times["write_bytes"].append(t)
        t, _ = timed(hashlib.sha256, blob)
        times["sha256"].append(t)
        t, copy = timed(bytearray, blob)
        times["memcpy"].append(t)
        del blob, copy
        t, blob = timed(store.read_bytes, relative)
        times["read_bytes"].append(t)
        t, decoded = timed(decode, blob, None)
        times["decode"].append(t)
        check_equal(value, decoded.data, f"breakdown {value_name}")
        del decoded, blob
        t, buffer = timed(read_whole_file, store, relative)
        times["read_file"].append(t)
        del buffer
    # Peak Python-heap growth during one encode (bytes objects, BytesIO, concatenations).
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        blob = encode(entry, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del blob
    store.delete(relative)
    result: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    result["encode_peak"] = peak - base
    return result


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the median is shown")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    parser.add_argument(
        "--values", nargs="+", choices=VALUE_NAMES, default=list(VALUE_NAMES), help="which values to measure"
    )
    parser.add_argument(
        "--paths", nargs="+", choices=PATH_NAMES, default=list(PATH_NAMES), help="which cache paths to measure"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the encode/write/read/decode breakdown")
    parser.add_argument("--dir", default=None, help="parent folder of the temporary store (default: system temp)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def print_header(args: argparse.Namespace, tmp: str) -> None:
    print("crystallize store benchmark")
    print(f"  command    : {shlex.join([sys.executable, *sys.argv])}")
    print(f"  python     : {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(f"  numpy      : {np.__version__}")
    print(f"  pyarrow    : {pa.__version__}")
    print(f"  crystallize: {getattr(crystallize, '__version__', '?')}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"  cpus       : {os.cpu_count()} (usable by this process: {usable})")
    print(f"  store      : {tmp} (temporary, removed at exit)")
    print(f"  repeats    : median of {args.repeats} (after {args.warmup} warm-up)")
    print()


def print_main_table(rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    head = (
        f"{'value':<10} {'path':<22} {'encoding':<13} {'HMAC':<4} "
        f"{'write ms':>9} {'MB/s':>8} {'read ms':>9} {'MB/s':>8} {'stored bytes':>13} {'read-only':>9}"
    )
    print(head)
    print("-" * len(head))
    previous = None
    for value_name, nbytes, r in rows:
        if previous is not None and previous != value_name:
            print()
        previous = value_name
        print(
            f"{value_name:<10} {r['path']:<22} {r['encoding']:<13} {r['signed']:<4} "
            f"{fmt_ms(r['write'])} {fmt_rate(nbytes, r['write'])} {fmt_ms(r['read'])} {fmt_rate(nbytes, r['read'])} "
            f"{r['size']:>13,} {r['read_only']:>9}"
        )
    print()


def print_breakdown(rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    print("Breakdown of the native, unsigned path (median ms; MB/s of payload in brackets)")
    cols = ("encode", "write_bytes", "read_bytes", "decode", "memcpy", "sha256", "read_file")
    labels = {
        "encode": "codec.encode",
        "write_bytes": "Store.write",
        "read_bytes": "Store.read",
        "decode": "codec.decode",
        "memcpy": "1x memcpy",
        "sha256": "1x sha256",
        "read_file": "read_buffer",
    }
    head = f"{'value':<10} " + " ".join(f"{labels[c]:>17}" for c in cols) + f" {'encode peak heap':>17}"
    print(head)
    print("-" * len(head))
    for value_name, nbytes, r in rows:
        cells = " ".join(f"{r[c] * 1e3:7.1f} [{nbytes / r[c] / 1e6:6.0f}]".rjust(17) for c in cols)
        print(f"{value_name:<10} {cells} {r['encode_peak'] / 2**20:12.0f} MiB")
    print(
        "  Store.read = Store.read_bytes (open_input_stream().read()); read_buffer = one "
        "open_input_file().read_buffer() of the same file;"
    )
    print("  encode peak heap = tracemalloc peak growth during one encode (Arrow's memory pool not included).")
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    main_rows: list[tuple[str, int, dict[str, Any]]] = []
    breakdown_rows: list[tuple[str, int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="crystallize-store-bench-", dir=args.dir) as tmp:
        print_header(args, tmp)
        root = os.path.join(tmp, "cache")
        for value_name in args.values:
            value = make_value(value_name)
            nbytes = payload_bytes(value)
            print(f"measuring {value_name} ({nbytes:,} payload bytes) ...", file=sys.stderr, flush=True)
            for path in args.paths:
                for signed in (False, True):
                    r = bench_cache_path(root, value_name, value, path, signed, args.repeats, args.warmup)
                    main_rows.append((value_name, nbytes, r))
            main_rows.append((value_name, nbytes, bench_plain_pickle(value, args.repeats, args.warmup)))
            if not args.no_breakdown:
                breakdown_rows.append((value_name, nbytes, bench_breakdown(root, value_name, value, args.repeats)))
            del value
            gc.collect()
    print_main_table(main_rows)
    if breakdown_rows:
        print_breakdown(breakdown_rows)
    print("All reads matched the values written.")
    print(f"Total time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkFailure as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
