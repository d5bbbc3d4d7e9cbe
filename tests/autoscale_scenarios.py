"""Clusters that grow while a run goes, each scenario in its own process (the test session holds its own Ray).

``python autoscale_scenarios.py SCENARIO WORKDIR`` prints ``HEAD <pid>`` for any Ray head
it starts with ``ray start`` (so the test can stop that tree should this process be
killed) and one ``RESULT <json>`` line with what it saw.

* ``joining``: a ``ray.cluster_utils.Cluster`` (head with 1 CPU); two worker nodes are
  added while a run goes.
* ``fake_autoscaler``: ``ray start --head --autoscaling-config`` with Ray's fake
  multi-node provider (``RAY_FAKE_CLUSTER=1``): a head with no CPUs, a worker type with
  one CPU, no workers at start; this process joins as a driver and runs an experiment.

Every Ray here has a private temp dir, listens on loopback and keeps token
authentication on; only the processes started here are stopped, by pid.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
PRIVATE_TMP = tempfile.mkdtemp(prefix="cas-", dir="/tmp")
os.makedirs(os.path.join(PRIVATE_TMP, "ray"), exist_ok=True)
os.environ["RAY_TMPDIR"] = PRIVATE_TMP
# Before Ray is imported: nodes and this driver on loopback; a token of our own, in the environment
# (no file written to ~/.ray), for the head, the nodes its autoscaler starts and this driver.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import psutil  # noqa: E402
import ray  # noqa: E402

from crystallize import Experiment, Pipeline, SeedPlugin, data_source, pipeline_step, treatment  # noqa: E402
from crystallize_ray import RayExecution  # noqa: E402


@data_source
def numbers(ctx):
    return 1


@pipeline_step()
def traced(data, ctx, *, delta: float = 0.0, pause: float = 0.0, trace: str = ""):
    """A replicate whose value depends on its seed; where it ran goes to a side file, not to the metrics."""
    if pause:
        time.sleep(pause)
    if trace:
        node = ray.get_runtime_context().get_node_id()
        Path(trace, f"{ctx['condition']}_{ctx['replicate']}").write_text(node)
    return data, {"value": data + delta + float(ctx.rng.integers(0, 1000))}


def experiment(replicates: int, pause: float, trace: str, plugin) -> Experiment:
    return Experiment(
        datasource=numbers(),
        pipeline=Pipeline([traced(pause=pause, trace=trace)]),
        plugins=[SeedPlugin(seed=3), *([plugin] if plugin is not None else [])],
        treatments=[treatment("shift", {"delta": 10.0})],
        replicates=replicates,
        name="grow",
    )


def metrics_of(result) -> dict:
    return {c: tm.metrics for c, tm in result.metrics.conditions()}


def run_and_compare(replicates: int, pause: float, workdir: Path, plugin) -> tuple[dict, object]:
    """Run on Ray (tracing nodes) and serially; what both gave and where the Ray run's replicates ran."""
    trace = workdir / "trace"
    trace.mkdir()
    started = time.monotonic()
    result = experiment(replicates, pause, str(trace), plugin).run()
    finished = time.monotonic()
    serial = experiment(replicates, 0.0, "", None).run()
    nodes = {p.name: p.read_text() for p in trace.iterdir()}
    seen = {
        "failed": result.failed,
        "metrics_equal_serial": metrics_of(result) == metrics_of(serial),
        "replicates_traced": len(nodes),
        "nodes_used": sorted(set(nodes.values())),
        "executor": result.provenance["executor"],
        "run_s": round(finished - started, 2),
        "finished_at": finished,
    }
    return seen, result


def runner_finished_after(seen: dict, moment: float) -> bool:
    return seen["finished_at"] > moment


def joining(workdir: Path) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "temp_dir": os.path.join(PRIVATE_TMP, "ray"), "include_dashboard": False},
    )
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}}, log_to_driver=False)
        head = ray.get_runtime_context().get_node_id()
        # The run goes on a thread: Ray starts nodes only from the main thread (signal handlers).
        out: list = []
        runner = threading.Thread(
            target=lambda: out.append(run_and_compare(40, 0.2, workdir, RayExecution(progress=False))[0]), daemon=True
        )
        runner.start()
        time.sleep(1.5)
        added = [cluster.add_node(num_cpus=1).node_id for _ in range(2)]
        added_at = time.monotonic()
        runner.join(120)
        seen = out[0]
        seen["added_while_running"] = runner_finished_after(seen, added_at)
        seen.update(head=head, added=added)
        return seen
    finally:
        ray.shutdown()
        cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAKE_CONFIG = {
    "cluster_name": "crystallize-fake",
    "max_workers": 2,
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1,
    "provider": {
        "type": "fake_multinode",
        "launch_multiple": True,
        # The fake nodes run no setup: without these the v1 autoscaler marks them "launch failed".
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    },
    "auth": {"ssh_user": "nobody"},
    "available_node_types": {
        # The fake provider names its head node type so; the head has no CPUs, as in cluster/aws.yaml.
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "cpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    },
    "head_node_type": "ray.head.default",
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
}


def stop_tree(pid: int) -> int:
    """Stop a process and everything under it (found before anything is signalled); how many there were."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def fake_autoscaler(workdir: Path) -> dict:
    gcs_port = _free_port()
    address = f"127.0.0.1:{gcs_port}"
    config = dict(FAKE_CONFIG, provider={**FAKE_CONFIG["provider"], "gcs_address": address})
    config_path = Path(PRIVATE_TMP, "autoscaling.json")
    config_path.write_text(json.dumps(config))
    env = dict(os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--autoscaling-config={config_path}",
        "--num-cpus=0",
        f"--port={gcs_port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={os.path.join(PRIVATE_TMP, 'ray')}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
    ]
    log = open(Path(PRIVATE_TMP, "head.log"), "w")  # closed in finally
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"HEAD {head.pid}", flush=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", gcs_port), timeout=1).close()
                break
            except OSError as exc:
                if head.poll() is not None or time.monotonic() > deadline:
                    tail = Path(PRIVATE_TMP, "head.log").read_text()[-3000:]
                    raise SystemExit("the head did not come up:\n" + tail) from exc
                time.sleep(0.5)
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}}, log_to_driver=False)
        head_node = ray.get_runtime_context().get_node_id()
        cpus_at_start = ray.cluster_resources().get("CPU", 0.0)
        requests: list[str] = []
        done = threading.Event()

        def watch_requests() -> None:  # what the run asks the autoscaler for, as it goes
            from ray.experimental.internal_kv import _internal_kv_get

            while not done.wait(0.3):
                value = _internal_kv_get(b"autoscaler_resource_request")
                if value is not None and (not requests or requests[-1] != value.decode()):
                    requests.append(value.decode())

        watcher = threading.Thread(target=watch_requests, daemon=True)
        watcher.start()
        seen, _ = run_and_compare(30, 0.4, workdir, RayExecution(progress=False, max_cpus=2))
        done.set()
        watcher.join(5)
        from ray.experimental.internal_kv import _internal_kv_get

        after = _internal_kv_get(b"autoscaler_resource_request")
        # Scale-down itself is not observed: the fake provider's v1 idle check looks nodes up by IP
        # (its IP is the node id), while every fake node reports 127.0.0.1, so none ever counts as idle.
        seen.update(
            head=head_node,
            cpus_at_start=cpus_at_start,
            requests=[json.loads(r) for r in requests],
            request_after=json.loads(after) if after is not None else None,
        )
        return seen
    finally:
        ray.shutdown()
        stopped = stop_tree(head.pid)
        log.close()
        print(f"STOPPED {stopped}", flush=True)


def main(scenario: str, workdir: Path) -> None:
    os.chdir(workdir)
    try:
        seen = {"joining": joining, "fake_autoscaler": fake_autoscaler}[scenario](workdir)
        print("RESULT " + json.dumps(seen), flush=True)
    finally:
        shutil.rmtree(PRIVATE_TMP, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
