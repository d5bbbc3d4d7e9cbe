"""An S3 endpoint for the store tests: one moto server on loopback per test session.

``moto_endpoint`` (session) starts ``ThreadedMotoServer`` on a free port, puts fake
credentials and ``CRYSTALLIZE_S3_ENDPOINT`` into ``os.environ`` (so spawned and forked
workers inherit them) and undoes all of it at the end of the session. Each test makes
its own bucket with :func:`new_bucket`, so tests never see each other's objects.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENDPOINT_ENV = "CRYSTALLIZE_S3_ENDPOINT"

# Fake credentials: moto accepts anything, and pyarrow/boto3 must never look for real ones.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket (names are >= 3 characters, lower case)."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in ``bucket`` under ``prefix`` (directory markers included)."""
    paginator = client(endpoint).get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    assert uri.startswith("s3://"), uri
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.split("?", 1)[0].rstrip("/")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server that lives for the whole session."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    for name in ("werkzeug", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in [*FAKE_AWS_ENV, ENDPOINT_ENV]}
    os.environ.update(FAKE_AWS_ENV)
    os.environ[ENDPOINT_ENV] = endpoint
    try:
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A bucket of this test's own."""
    return new_bucket(moto_endpoint)


def make_store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The root of a store of this test's own: a folder in ``tmp_path``, or a fresh S3 bucket/prefix
    (``request.param`` says which; the S3 side uses the ``moto_endpoint`` fixture)."""
    if request.param == "local":
        root = tmp_path / "sandbox" / "store"
        root.mkdir(parents=True)
        return str(root)
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"s3://{new_bucket(endpoint)}/store-{uuid.uuid4().hex[:8]}"
