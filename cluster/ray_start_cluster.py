"""Start a Ray cluster on this machine the way users start real ones: Ray's ``ray start`` command.

    python cluster/ray_start_cluster.py --workers 2 --cpus-per-worker 1

One head (``ray start --head``, with the Ray Client server) and N worker nodes
(``ray start --address=HEAD``), each a separate set of processes with its own ``--temp-dir``,
all on 127.0.0.1 with free ports and Ray's token authentication on (``RAY_AUTH_MODE=token``).
It prints the GCS address and the ``ray://`` address; in another terminal:

    RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \\
        RAY_ADDRESS=<GCS address> python examples/minimal_experiment/main.py
    RAY_AUTH_MODE=token RAY_ADDRESS=<ray:// address> python examples/minimal_experiment/main.py

Ctrl-C (or SIGTERM) stops exactly the processes this script started, found by their temp dir
or node id and their process trees, never by name, never with ``ray stop`` (that stops every
Ray on the machine). From Python (tests): ``with ray_start_cluster(workers=1) as cluster:``.

Loopback: ``ray start`` replaces 127.0.0.1 by the machine's address (a real cluster's nodes
must reach each other), which would expose the cluster. Here every process runs with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's single-machine mode, which keeps the node
address, and so every port, on loopback. ``ray start`` refuses to add a worker node in that
mode, so worker nodes run the same command through ``WORKER_START``: Ray's CLI entry point
with the cluster check allowed and 127.0.0.1 kept as given. On real machines use plain
``ray start`` (cluster/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from crystallize.errors import ExecutionError
from crystallize_ray.token_file import MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV, protect_auth_token

HOST = "127.0.0.1"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
START_TIMEOUT_SECONDS = 120.0
GRACE_SECONDS = 5.0

# `ray start --address=...` for a worker node on loopback (see the module docstring).
WORKER_START = (
    "import sys\n"
    "import ray._private.ray_constants as constants\n"
    "import ray._private.services as services\n"
    "constants.ENABLE_RAY_CLUSTER = True\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "sys.exit(main())\n"
)
# Ports each node binds; free ones are picked so several clusters (and other Rays) coexist.
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
HEAD_PORT_FLAGS = ("--port", "--ray-client-server-port", "--dashboard-port")


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nobody listens on now (held together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_command() -> list[str]:
    """Ray's CLI run by this interpreter (``python -m ray.scripts.scripts``, what the ``ray`` command runs).

    Not the ``ray`` found on PATH: in a virtual environment made with ``--system-site-packages``
    that is the system Python's, which lacks the packages installed into the environment
    (``ray[client]``'s grpcio, for one).
    """
    if importlib.util.find_spec("ray") is None:
        raise ExecutionError("Ray is not installed in this environment: pip install 'crystallize-ray[ray]'")
    return [sys.executable, "-m", "ray.scripts.scripts"]


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or unset, for None) variables in this process for a moment."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class RayStartCluster:
    """A head and worker nodes started with ``ray start``; stops exactly what it started.

    ``address`` (GCS, for ``RayExecution(address=...)`` / ``RAY_ADDRESS``) and
    ``client_address`` (``ray://``, Ray Client) are set by ``start()``; ``driver_env()``
    is what a driver on this machine adds to its environment to join.
    """

    workers: int = 1
    cpus_per_worker: float = 1
    head_cpus: float = 0
    token_path: str | None = None
    address: str = ""
    client_address: str = ""
    root: Path | None = None
    _env: dict[str, str] = field(default_factory=dict)
    _started_at: float = 0.0
    _node_dirs: list[Path] = field(default_factory=list)
    _known: dict[int, psutil.Process] = field(default_factory=dict)

    def cluster_env(self) -> dict[str, str]:
        """Variables every process of the cluster, and every driver, runs with."""
        env = {MODE_ENV: "token", LOOPBACK_ENV: "0", "RAY_USAGE_STATS_ENABLED": "0"}
        if self.token_path:
            env[TOKEN_PATH_ENV] = str(self.token_path)
        return env

    def driver_env(self) -> dict[str, str]:
        """What a driver on this machine sets to join: token mode, the token file, loopback."""
        return self.cluster_env()

    def start(self) -> RayStartCluster:
        """Start the head, then the worker nodes; on any failure stop what already started."""
        self._started_at = time.time()
        self.root = Path(tempfile.mkdtemp(prefix="crs-", dir="/tmp"))  # short: Ray puts sockets there
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env.update(self.cluster_env())
        self._env = env
        with _environment({key: env.get(key) for key in (MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV)}):
            protect_auth_token()  # a missing token file is created mode 0600 (Ray would make it 0644)
        try:
            self._start_head()
            for index in range(1, self.workers + 1):
                self._start_worker(index)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_args(self, name: str) -> list[str]:
        node_dir = self.root / name  # type: ignore[operator]
        node_dir.mkdir()
        self._node_dirs.append(node_dir)
        ports = free_ports(len(NODE_PORT_FLAGS))
        args = [f"--temp-dir={node_dir}", f"--node-ip-address={HOST}", "--disable-usage-stats"]
        args += [f"{flag}={port}" for flag, port in zip(NODE_PORT_FLAGS, ports, strict=True)]
        return [*args, "--log-style=record", "--log-color=false"]

    def _run(self, name: str, command: list[str]) -> None:
        log = self.root / f"{name}.log"  # type: ignore[operator]
        with open(log, "w") as out:
            try:
                done = subprocess.run(
                    command, env=self._env, stdout=out, stderr=subprocess.STDOUT, timeout=START_TIMEOUT_SECONDS
                )
            finally:
                self._scan()  # what it started so far, even if it failed or hung
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise ExecutionError(f"`ray start` for the {name} node failed (exit {done.returncode}):\n{tail}")

    def _start_head(self) -> None:
        gcs, client, dashboard = free_ports(len(HEAD_PORT_FLAGS))
        args = self._node_args("head")
        args += [f"--port={gcs}", f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}"]
        args += ["--include-dashboard=false", f"--num-cpus={self.head_cpus:g}"]
        self._run("head", [*ray_command(), "start", "--head", *args])
        self.address = f"{HOST}:{gcs}"
        self.client_address = f"ray://{HOST}:{client}"

    def _start_worker(self, index: int) -> None:
        args = [f"--address={self.address}", *self._node_args(f"worker{index}"), f"--num-cpus={self.cpus_per_worker:g}"]
        self._run(f"worker{index}", [sys.executable, "-c", WORKER_START, "start", *args])

    def _node_ids(self) -> set[str]:
        """Our nodes' ids, from the port files Ray writes in each session folder (``<what>_port_<id>``)."""
        ids = set()
        for node_dir in self._node_dirs:
            for path in node_dir.glob("session_*/*_port_*"):
                ids.add(path.name.rsplit("_", 1)[-1])
        return ids

    def _is_ours(self, proc: psutil.Process, markers: list[str]) -> bool:
        try:
            if proc.create_time() < self._started_at - 1.0:
                return False
            command = " ".join(proc.cmdline())
        except psutil.Error:
            return False
        return any(marker in command for marker in markers)

    def _scan(self) -> list[psutil.Process]:
        """Record every live process of this cluster: its command line names our temp root or one
        of our node ids (the Ray Client server names only the node id), plus their descendants."""
        if self.root is None:
            return []
        markers = [f"{self.root}/", *(f"--node-id={node}" for node in self._node_ids())]
        for proc in psutil.process_iter():
            if proc.pid not in self._known and self._is_ours(proc, markers):
                self._known[proc.pid] = proc
        for proc in list(self._known.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    self._known.setdefault(child.pid, child)
        return self.processes()

    def processes(self) -> list[psutil.Process]:
        """The processes this cluster started that still run (pid and start time checked)."""
        alive = []
        for proc in self._known.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        return alive

    def started(self) -> list[psutil.Process]:
        """Every process recorded as ours, running or not (for checking they are all gone)."""
        self._scan()
        return list(self._known.values())

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Stop our processes as ``ray stop`` orders it (raylets, the rest, GCS last), by pid only."""
        for _ in range(3):  # a raylet may start a worker while we stop the others: look again
            procs = self._scan()
            if not procs:
                break
            raylets = [p for p in procs if _executable(p).endswith("/raylet")]
            gcs = [p for p in procs if _executable(p).endswith("/gcs_server")]
            rest = [p for p in procs if p not in raylets and p not in gcs]
            for bucket in (raylets, rest, gcs):
                _terminate(bucket, grace)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayStartCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _executable(proc: psutil.Process) -> str:
    try:
        command = proc.cmdline()
    except psutil.Error:
        return ""
    return command[0] if command else ""


def _terminate(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM, then SIGKILL what is left after ``grace`` seconds."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


@contextlib.contextmanager
def ray_start_cluster(
    workers: int = 1, cpus_per_worker: float = 1, head_cpus: float = 0, token_path: str | None = None
) -> Iterator[RayStartCluster]:
    """A running cluster (``.address``, ``.client_address``, ``.driver_env()``), stopped on exit."""
    cluster = RayStartCluster(
        workers=workers, cpus_per_worker=cpus_per_worker, head_cpus=head_cpus, token_path=token_path
    )
    with cluster:
        yield cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker nodes besides the head (default 2)")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--head-cpus", type=float, default=0, help="CPUs on the head (default 0: it only schedules)")
    parser.add_argument("--token-file", default=None, help="Ray's token file (default: $RAY_AUTH_TOKEN_PATH or ~/.ray)")
    args = parser.parse_args()

    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    token_file = args.token_file or os.environ.get(TOKEN_PATH_ENV)
    cluster = RayStartCluster(args.workers, args.cpus_per_worker, args.head_cpus, token_file)
    with cluster:
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        env = " ".join(
            f"{key}={value}" for key, value in cluster.driver_env().items() if key != "RAY_USAGE_STATS_ENABLED"
        )
        print(f"Ray cluster up (ray start): 1 head + {args.workers} worker node(s), temp dir {cluster.root}")
        print(f"GCS address:  {cluster.address}")
        print(f"Ray Client:   {cluster.client_address}")
        print("use it (from another terminal of this machine):")
        print(f"  {env} RAY_ADDRESS={cluster.address} python examples/minimal_experiment/main.py")
        print(f"  {env} RAY_ADDRESS={cluster.client_address} python examples/minimal_experiment/main.py")
        print(f"{len(cluster.processes())} processes; Ctrl-C stops them.", flush=True)
        while not stop:
            time.sleep(0.5)
        print("stopping...", flush=True)
    print("cluster stopped")


if __name__ == "__main__":
    main()
