"""A cluster started with Ray's own CLI (``cluster/ray_start_cluster.py``: ``ray start --head`` + a worker
node, private temp dirs, loopback, token auth) runs an experiment for a driver in another process that
joins by address and by ``ray://`` (Ray Client), with the metrics of a serial run; stopping it leaves
none of the processes it started."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the script's loopback setup is Linux's")

ROOT = Path(__file__).resolve().parent.parent
DRIVER = textwrap.dedent(
    """
    import json, sys
    from crystallize import Experiment, Pipeline, SeedPlugin, SerialExecution, data_source, pipeline_step, treatment
    from crystallize_ray import RayExecution

    @data_source
    def base(ctx):
        return 1.0

    @pipeline_step()
    def noisy(data, ctx, *, scale: float = 1.0):
        import ray
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "driver"
        return data, {"draw": float(ctx.rng.normal()) * scale + data, "node": node}

    def run(execution):
        experiment = Experiment(
            datasource=base(), pipeline=Pipeline([noisy()]), plugins=[SeedPlugin(seed=11), execution],
            treatments=[treatment("wide", {"scale": 3.0})], replicates=6, name="joined",
        )
        result = experiment.run()
        metrics = {c: tm.metrics for c, tm in result.metrics.conditions()}
        nodes = sorted({n for m in metrics.values() for n in m["node"]})
        return result.failed, {c: m["draw"] for c, m in metrics.items()}, nodes

    serial = run(SerialExecution())  # first, so no Ray is connected in this process yet
    joined = run(RayExecution(address=sys.argv[1], progress=False))
    import ray
    nodes = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}
    print("RESULT " + json.dumps({"serial": serial, "joined": joined, "nodes": nodes}), flush=True)
    """
)


def load_script() -> ModuleType:
    """cluster/ray_start_cluster.py as a module (cluster/ is no package)."""
    spec = importlib.util.spec_from_file_location("ray_start_cluster", ROOT / "cluster" / "ray_start_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    """Head (no CPUs) + one worker node (2 CPUs), with a token file of its own."""
    script = load_script()
    with token_file() as token:
        with script.ray_start_cluster(workers=1, cpus_per_worker=2, token_path=token) as running:
            yield running


@contextlib.contextmanager
def token_file() -> Iterator[str]:
    """A token of the test's own (mode 0600), so ~/.ray is left alone."""
    folder = Path(tempfile.mkdtemp(prefix="crs-tok-", dir="/tmp"))
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    try:
        yield str(token)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_driver(cluster, address: str, workdir: Path) -> dict:
    script = workdir / "driver.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(cluster.driver_env())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script), address], cwd=workdir, env=env, capture_output=True, text=True, timeout=150
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (
        f"the driver printed no result (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return json.loads(lines[-1].removeprefix("RESULT "))


def check_joined_run(seen: dict) -> None:
    serial_failed, serial_draws, _ = seen["serial"]
    failed, draws, nodes_used = seen["joined"]
    assert serial_failed == 0 and failed == 0
    assert draws == serial_draws  # same seeds, same answer: replicate seeds do not depend on the executor
    assert len(draws["baseline"]) == len(draws["wide"]) == 6
    assert len(seen["nodes"]) == 2  # the head and the worker node joined one cluster
    workers = [node for node, cpus in seen["nodes"].items() if cpus > 0]
    assert nodes_used == workers  # the head has no CPUs: every replicate ran on the worker node


@pytest.mark.timeout(180)
def test_a_driver_in_another_process_joins_the_ray_start_cluster_by_address(cluster, tmp_path: Path) -> None:
    assert cluster.address.startswith("127.0.0.1:")
    check_joined_run(run_driver(cluster, cluster.address, tmp_path))


@pytest.mark.timeout(180)
def test_a_driver_joins_through_ray_client_by_its_ray_url(cluster, tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc") is None:
        pytest.skip("Ray Client needs ray[client] (grpcio is not installed)")
    assert cluster.client_address.startswith("ray://127.0.0.1:")
    check_joined_run(run_driver(cluster, cluster.client_address, tmp_path))


def test_every_process_of_the_cluster_runs_with_token_auth_and_listens_on_loopback_only(cluster) -> None:
    procs = cluster.processes()
    commands = [" ".join(p.cmdline()) for p in procs]
    assert sum("/raylet " in c for c in commands) == 2 and any("gcs_server" in c for c in commands)
    assert any("ray.util.client.server" in c for c in commands)  # found by node id, not by its temp dir
    listening, checked = [], 0
    for proc in procs:
        env = proc.environ()  # empty for a process that renamed itself (setproctitle reuses that memory)
        if env:
            assert env.get("RAY_AUTH_MODE") == "token", proc.cmdline()
            checked += 1
        listening += [c.laddr for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert checked >= 4 and listening  # at least the GCS, both raylets and the Ray Client server
    for laddr in listening:
        ip = ipaddress.ip_address(laddr.ip)
        assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, laddr


def test_stopping_the_cluster_leaves_none_of_the_processes_it_started(cluster) -> None:
    """Runs last in this module: it stops the module's cluster."""
    started = cluster.started()
    assert len(started) >= 10  # GCS, raylets, agents, monitors, Ray Client server, ...
    root = cluster.root
    cluster.stop()
    left = []
    for proc in started:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    assert not left, [p.pid for p in left]
    assert not root.exists()


@pytest.mark.timeout(120)
def test_a_worker_node_that_fails_to_start_stops_the_head_already_started(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    monkeypatch.setattr(script, "WORKER_START", "import sys; print('no worker today'); sys.exit(3)")
    with token_file() as token:
        cluster = script.RayStartCluster(workers=1, token_path=token)
        with pytest.raises(script.ExecutionError, match=r"worker1 node failed \(exit 3\)"):
            cluster.start()
    started = list(cluster._known.values())
    assert len(started) >= 5  # the head's GCS, raylet, agents, monitors, Ray Client server were up
    assert not cluster.processes() and not cluster.root.exists()
