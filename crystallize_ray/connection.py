"""Getting a Ray to run on: a private local one, a cluster by address, or the one already up.

Rules: never shut down a Ray this package did not start; a Ray this package starts listens
on loopback only, keeps Ray's token authentication on, and leaves no temp folder behind: the
one made for it is removed at exit once Ray has stopped (or by the watchdog of ``fate`` when
this process is killed). Ray's own notices keep quiet under ``crystallize run --quiet``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from crystallize.errors import ExecutionError

from . import fate
from .token_file import protect_auth_token
from .worker_logs import RayNotices, quiet, quiet_ray_forwarding, quiet_ray_warnings

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_STARTED_HERE = False
CONNECT_TIMEOUT_SECONDS = 30.0
REMOVE_ATTEMPTS = 10
_TEMP_DIRS: list[str] = []  # made here for a private Ray: removed at exit


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


def _quiet_notices() -> None:
    """Ray's notices on the driver obey ``--quiet``: its logger, its raylet/autoscaler lines, its own warnings."""
    ray_logger = logging.getLogger("ray")
    if not ray_logger.handlers:  # configure_logging=False cleared Ray's handler; the user did not add one
        ray_logger.addHandler(RayNotices())
    quiet_ray_forwarding()
    quiet_ray_warnings()


@contextlib.contextmanager
def _ray_start_quiet() -> Iterator[None]:
    """Under ``--quiet``, what Ray logs while it starts (token notices and the like) stays unsaid.

    ``ray.init(configure_logging=False)`` removes the handlers of Ray's logger, so these records
    would reach Python's last-resort handler; Ray's logger level is the one thing it keeps.
    """
    ray_logger = logging.getLogger("ray")
    saved = ray_logger.level
    if quiet():
        ray_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray_logger.setLevel(saved)


def _no_deduplication() -> None:
    """A private Ray shows every forwarded line: Ray merges repeated lines of different workers unless told not to."""
    if "RAY_DEDUP_LOGS" in os.environ:  # the user's choice
        return
    try:
        from ray._private import ray_logging

        ray_logging.RAY_DEDUP_LOGS = False  # read at each batch of lines, on the driver
    except (ImportError, AttributeError) as exc:
        logger.debug("cannot turn off Ray's log de-duplication: %s", exc)


def _remove_temp_dirs() -> None:
    """At exit: stop the private Ray first (its exit handlers would, after this one), then remove its folder.

    Registered after ``ray.init()``, so it runs before Ray's own exit handlers, which would
    otherwise still write to the folder or stop processes that do.
    """
    import ray

    if _STARTED_HERE and ray.is_initialized():
        try:
            ray.shutdown(wait_for_processes=True, _exiting_interpreter=True)
        except Exception as exc:  # noqa: BLE001 - exiting anyway; the watchdog stops what is left
            logger.debug("stopping the private Ray at exit: %s", exc)
    for path in _TEMP_DIRS:
        for _ in range(REMOVE_ATTEMPTS):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                break
            time.sleep(0.1)  # a process of Ray still wrote into it: once more, after it is gone
    _TEMP_DIRS.clear()


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
            made = None
            if "_temp_dir" not in options:
                made = options["_temp_dir"] = tempfile.mkdtemp(prefix="cray-")
            logger.info("Starting a private local Ray on loopback (temp dir %s)", options["_temp_dir"])
            protect_auth_token()  # Ray would write it world-readable
            _no_deduplication()
            try:
                with loopback_only(), _ray_start_quiet():
                    ray.init(**options)
            except BaseException:
                if made is not None:
                    shutil.rmtree(made, ignore_errors=True)
                raise
            _STARTED_HERE = True
            if made is not None:
                if not _TEMP_DIRS:
                    atexit.register(_remove_temp_dirs)
                _TEMP_DIRS.append(made)
            _quiet_notices()
            fate.start_for_private_ray(remove=made)  # its processes die with this one, even on SIGKILL
            return "local"
        if address != "auto":
            _probe(address, min(timeout, 10.0))
        errors: list[BaseException] = []

        def connect() -> None:
            try:
                with _ray_start_quiet():
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
        _quiet_notices()
        logger.info("Connected to the Ray cluster at %s", address)
        return address
