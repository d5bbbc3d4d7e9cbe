"""Multi-node scenarios on a ``ray.cluster_utils.Cluster`` (head + 2 worker nodes on this machine).

Run as a script in its own process (the test session has its own Ray):
``python cluster_scenarios.py SCENARIO WORKDIR``; prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# A private Ray temp root: the cluster must not touch the machine-wide /tmp/ray (other people's Ray).
PRIVATE_TMP = tempfile.mkdtemp(prefix="crc-", dir="/tmp")
os.makedirs(os.path.join(PRIVATE_TMP, "ray"), exist_ok=True)
os.environ["RAY_TMPDIR"] = PRIVATE_TMP

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from crystallize import Experiment, Pipeline, SeedPlugin, data_source, pipeline_step, treatment  # noqa: E402
from crystallize_ray import RayExecution  # noqa: E402


@data_source
def numbers(ctx):
    return 1


@pipeline_step()
def write_note(data, ctx, *, delta: float = 0.0, pause: float = 0.0):
    if pause:
        time.sleep(pause)
    ctx.artifacts.add("note.txt", f"{ctx['condition']}:{ctx['replicate']}".encode())
    return data, {"value": data + delta + ctx["replicate"], "node": ray.get_runtime_context().get_node_id()}


def experiment(replicates: int, pause: float, batch_size: int | None) -> Experiment:
    return Experiment(
        datasource=numbers(),
        pipeline=Pipeline([write_note(pause=pause)]),
        plugins=[SeedPlugin(seed=5), RayExecution(progress=False, batch_size=batch_size, max_retries=5)],
        treatments=[treatment("shift", {"delta": 10.0})],
        replicates=replicates,
        name="cluster",
    )


def summary(result, workdir: Path) -> dict:
    files = sorted(str(p.relative_to(workdir)) for p in (workdir / "data" / "cluster").rglob("note.txt"))
    contents_ok = all((workdir / f).read_text() == f"{f.split('/')[4]}:{f.split('/')[3].split('_')[1]}" for f in files)
    return {
        "failed": result.failed,
        "errors": {
            c: {str(r): e.message[:200] for r, e in errs.items()} for c, errs in result.replicate_errors.items()
        },
        "values": {c: tm.metrics.get("value", []) for c, tm in result.metrics.conditions()},
        "replicates": {c: tm.replicates.get("value", []) for c, tm in result.metrics.conditions()},
        "nodes_used": len({n for _, tm in result.metrics.conditions() for n in tm.metrics.get("node", [])}),
        "artifact_files": files,
        "artifact_contents_ok": contents_ok,
        "manifest_paths": sorted(e.path for entries in result.artifact_entries.values() for e in entries),
        "executor": result.provenance["executor"],
    }


def main(scenario: str, workdir: Path) -> None:
    os.chdir(workdir)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "temp_dir": os.path.join(PRIVATE_TMP, "ray"), "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}}, log_to_driver=False)
    try:
        extra: dict = {}
        if scenario == "artifacts":
            result = experiment(replicates=8, pause=0.0, batch_size=2).run()
        elif scenario == "node_loss":
            exp = experiment(replicates=30, pause=0.15, batch_size=2)
            removed_at: list[float] = []

            def remove_a_worker() -> None:
                time.sleep(1.5)
                cluster.remove_node(workers[1], allow_graceful=False)
                removed_at.append(time.monotonic())

            started = time.monotonic()
            threading.Thread(target=remove_a_worker, daemon=True).start()
            result = exp.run()
            finished = time.monotonic()
            deadline = time.monotonic() + 30  # Ray notices a killed node asynchronously
            while time.monotonic() < deadline and sum(1 for n in ray.nodes() if n.get("Alive")) > 2:
                time.sleep(0.5)
            extra = {
                "removed_during_run": bool(removed_at) and removed_at[0] < finished,
                "removed_after_s": round(removed_at[0] - started, 2) if removed_at else None,
                "run_s": round(finished - started, 2),
                "alive_nodes_after": sum(1 for n in ray.nodes() if n.get("Alive")),
            }
        else:
            raise SystemExit(f"unknown scenario {scenario}")
        print("RESULT " + json.dumps({**summary(result, workdir), **extra}))
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(PRIVATE_TMP, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
