"""Upload one large artifact to S3 through ``Store.write_bytes``, against moto on loopback.

Run it with::

    python benchmarks/s3_large_artifact.py                 # 256 MiB, 3 repeats
    python benchmarks/s3_large_artifact.py --mib 2048 --repeats 1
    python benchmarks/s3_large_artifact.py --mib 64 --read-bytes   # Store.read_bytes too

It starts a moto S3 server in this process on ``127.0.0.1`` (a free port), with fake
credentials set in this process only, makes one bucket, and times, per repeat:

* ``write_bytes``  ``Store("s3://bucket/bench").write_bytes(...)``: the multipart upload to the
                   temporary key, then the move (a server-side copy and a delete) to the final key;
* ``upload only``  the same bytes through pyarrow straight to a key (``open_output_stream`` and
                   ``write``), i.e. the upload without the move (what ``write_bytes`` would cost
                   if pyarrow could abort an upload and the temporary key could go);
* ``read (1 GET)`` the final key through ``open_input_file`` (its size known, so one ranged GET),
                   checked equal to what was written;
* ``read_bytes``   with ``--read-bytes`` only: ``Store.read_bytes`` of the final key (it opens the
                   object as a random-access file, so one GET; until 2026-12 it read a stream,
                   256 KiB per GET, and 64 MiB took 9.5 s here against 0.10 s now).

It reports MB/s (1 MB = 10**6 B, median of the repeats), the parts the server received (counted
inside moto: the sizes of every ``UploadPart`` of the upload) and checks that no temporary object
and no open multipart upload are left. moto keeps everything in memory, several copies of it at
once while it assembles and copies an object: a 2 GiB run wants about 12 GiB of free memory.
Loopback moto is no model of real S3's throughput; the part count and the ratio of the move to
the upload are what carry over.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from crystallize.store import Store
from crystallize.store.filesystem import is_temporary

MiB = 1024 * 1024
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class BenchmarkFailure(RuntimeError):
    """What was read back differs from what was written, or the upload left something behind."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--mib", type=int, default=256, help="artifact size in MiB (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default 3)")
    parser.add_argument("--read-bytes", action="store_true", help="also time Store.read_bytes")
    args = parser.parse_args(argv)
    if args.mib < 1 or args.repeats < 1:
        parser.error("--mib and --repeats must be at least 1")
    return args


def count_parts() -> dict[str, list[int]]:
    """Patch moto's backend (it runs in this process) to record each upload's part sizes by key."""
    from moto.s3.models import S3Backend

    parts: dict[str, list[int]] = {}
    upload_part = S3Backend.upload_part

    def recording(backend: Any, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        key = backend.get_bucket(bucket_name).multiparts[multipart_id].key_name
        parts.setdefault(key, []).append(len(value))
        return upload_part(backend, bucket_name, multipart_id, part_id, value)

    setattr(S3Backend, "upload_part", recording)  # noqa: B010 - patching a class of the in-process server
    return parts


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


NAMES = ("artifact.bin", "direct.bin")


def one_repeat(store: Store, data: bytes, folder: str, read_bytes: bool) -> dict[str, float]:
    """Seconds per path for one repeat, into ``folder``; raises if a read gives back other bytes."""
    relative, direct = f"{folder}/{NAMES[0]}", f"{folder}/{NAMES[1]}"
    got: list[bytes] = []

    def upload_only() -> None:
        with store.fs.open_output_stream(store.full_path(direct)) as stream:
            stream.write(data)

    def read_once() -> None:
        with store.fs.open_input_file(store.full_path(relative)) as handle:
            got.append(handle.read())

    seconds = {
        "write_bytes": timed(lambda: store.write_bytes(relative, data)),
        "upload only": timed(upload_only),
        "read (1 GET)": timed(read_once),
    }
    if read_bytes:
        seconds["read_bytes"] = timed(lambda: got.append(store.read_bytes(relative)))
    if any(blob != data for blob in got):
        raise BenchmarkFailure(f"{relative}: the bytes read back differ from those written")
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import boto3
    from moto.server import ThreadedMotoServer

    for name in ("werkzeug", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.update(FAKE_AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ["CRYSTALLIZE_S3_ENDPOINT"] = endpoint
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        parts = count_parts()

        print(f"command : {shlex.join([sys.executable, *sys.argv])}")
        print(f"machine : {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"pyarrow : {pa.__version__}; moto S3 at {endpoint} (in this process)")
        size = args.mib * MiB
        data = os.urandom(size)
        print(f"artifact: {args.mib} MiB ({size:,} bytes), {args.repeats} repeat(s)")

        store = Store(f"s3://{bucket}/bench")
        times: dict[str, list[float]] = {"write_bytes": [], "upload only": [], "read (1 GET)": []}
        if args.read_bytes:
            times["read_bytes"] = []
        for repeat in range(args.repeats):
            for label, seconds in one_repeat(store, data, f"run-{repeat}", args.read_bytes).items():
                times[label].append(seconds)
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"bench/run-{repeat}/{n}"} for n in NAMES]})

        keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        left = [key for key in keys if is_temporary(key.rsplit("/", 1)[-1])]
        pending = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        if left or pending:
            raise BenchmarkFailure(f"left behind: temporaries {left}, open uploads {[u['Key'] for u in pending]}")
        temporary_uploads = [sizes for key, sizes in parts.items() if is_temporary(key.rsplit("/", 1)[-1])]

        print()
        print(f"{'path':<12} {'median s':>9} {'MB/s':>8}   runs (s)")
        for label, values in times.items():
            median = statistics.median(values)
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(f"{label:<12} {median:>9.2f} {size / median / 1e6:>8.0f}   {runs}")
        move = statistics.median(times["write_bytes"]) - statistics.median(times["upload only"])
        print(f"the move (write_bytes - upload only): {move:.2f} s")
        sizes = temporary_uploads[0]
        shown = sorted({s / MiB for s in sizes})
        print(f"parts per upload: {len(sizes)} (part sizes in MiB: {', '.join(f'{s:g}' for s in shown)})")
        print("left behind: no temporary object, no open multipart upload")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
