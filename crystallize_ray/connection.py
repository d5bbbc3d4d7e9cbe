"""Getting a Ray to run on: a private local one, a cluster by address, or the one already up.

Rules: never shut down a Ray this package did not start; a Ray this package starts listens
on loopback only and keeps Ray's token authentication on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from crystallize.errors import ExecutionError

from . import fate
from .token_file import protect_auth_token

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_STARTED_HERE = False
CONNECT_TIMEOUT_SECONDS = 30.0


# Ray treats a node as "cluster capable" unless this is 0 (its default on macOS and Windows);
# then it keeps the node address on loopback, and its GCS, raylet, workers and agents bind
# there instead of on every interface and the machine's address.
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """A Ray started inside this block listens on 127.0.0.1 only.

    The processes Ray starts inherit the setting; this process gets its own back afterwards.
    Token authentication stays as Ray sets it up for a new local cluster: on, unless the user
    set ``RAY_AUTH_MODE`` (Ray turns it on itself and refreshes its cached config; setting the
    variable here instead, after Ray was imported, would leave this process without the token).
    """
    from ray._private import ray_constants

    previous_env = os.environ.get(_CLUSTER_ENV)
    previous_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous_flag
        if previous_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = previous_env


def started_here() -> bool:
    """Whether this process started the Ray it is connected to."""
    return _STARTED_HERE


def _probe(address: str, timeout: float) -> None:
    """Fail fast, naming the address, when nothing listens there (Ray itself would retry for minutes)."""
    text = address if "://" in address else f"tcp://{address}"
    parsed = urlparse(text)
    host, port = parsed.hostname, parsed.port
    if host is None or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise ExecutionError(
            f"Cannot reach a Ray cluster at {address!r}: {exc}. Check the address (ray://HOST:10001 for "
            "Ray Client, HOST:6379 from inside the cluster), that the head node runs, and the firewall."
        ) from exc


def ensure_connected(
    address: str | None,
    *,
    runtime_env: dict[str, Any] | None = None,
    init_kwargs: dict[str, Any] | None = None,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> str:
    """Connect (or start) Ray once per process; returns how: ``existing``, ``local`` or the address."""
    global _STARTED_HERE
    import ray

    with _LOCK:
        if ray.is_initialized():
            return "existing"
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"configure_logging": False, "log_to_driver": True}
        if runtime_env:
            options["runtime_env"] = runtime_env
        options.update(init_kwargs or {})
        if address in (None, "local"):
            options.setdefault("include_dashboard", False)
            options.setdefault("_node_ip_address", "127.0.0.1")
            options.setdefault("_temp_dir", tempfile.mkdtemp(prefix="cray-"))
            logger.info("Starting a private local Ray on loopback (temp dir %s)", options["_temp_dir"])
            protect_auth_token()  # Ray would write it world-readable
            with loopback_only():
                ray.init(**options)
            _STARTED_HERE = True
            fate.start_for_private_ray()  # its processes die with this one, even on SIGKILL
            return "local"
        if address != "auto":
            _probe(address, min(timeout, 10.0))
        errors: list[BaseException] = []

        def connect() -> None:
            try:
                ray.init(address=address, **options)
            except BaseException as exc:  # noqa: BLE001 - reported below with the address
                errors.append(exc)

        worker = threading.Thread(target=connect, name="crystallize-ray-connect", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise ExecutionError(f"Connecting to the Ray cluster at {address!r} did not finish within {timeout:.0f} s")
        if errors:
            raise ExecutionError(f"Cannot connect to the Ray cluster at {address!r}: {errors[0]}") from errors[0]
        logger.info("Connected to the Ray cluster at %s", address)
        return address
