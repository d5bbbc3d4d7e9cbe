"""Retention never deletes a run another process is still writing (leases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from crystallize import ArtifactPlugin, Experiment, Pipeline, SeedPlugin, SerialExecution, data_source, pipeline_step
from crystallize.store.filesystem import Store
from crystallize.store.lease import LEASE, is_live
from crystallize.store.records import prune_versions

WRITER = textwrap.dedent(
    """
    import sys, time
    from crystallize import ArtifactPlugin, Experiment, Pipeline, SeedPlugin, SerialExecution
    from crystallize import data_source, pipeline_step

    @data_source
    def zero(ctx):
        return 0

    @pipeline_step()
    def slow(data, ctx):
        time.sleep(0.15)
        ctx.artifacts.add("note.txt", b"kept")
        return data, {"value": 1.0}

    store = ArtifactPlugin(root_dir=sys.argv[1], lease_seconds=1.0, lease_renew_seconds=0.2)
    exp = Experiment(zero(), Pipeline([slow()]), name="leased", replicates=30,
                     plugins=[store, SeedPlugin(seed=1), SerialExecution(progress=False)])
    result = exp.run()
    print("DONE", result.failed, len(result.metrics.baseline.metrics["value"]), flush=True)
    """
)


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def quick(data, ctx):
    return data, {"value": 1.0}


def test_retention_keeps_a_version_another_process_is_writing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {k: v for k, v in os.environ.items() if k != "CRYSTALLIZE_DATA_URI"}
    writer = subprocess.Popen(
        [sys.executable, str(script), str(root)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        plan = root / "leased" / "v0" / "plan.json"
        deadline = time.monotonic() + 60
        while not plan.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert plan.exists(), "the writer never started"
        time.sleep(2.0)  # past the 1 s expiry: only renewals keep the writer's lease live
        assert is_live(Store(str(root)), "leased", 0)
        pruner = Experiment(
            zero(),
            Pipeline([quick()]),
            name="leased",
            plugins=[ArtifactPlugin(root_dir=str(root), artifact_retention=1), SerialExecution(progress=False)],
        )
        assert pruner.run().failed == 0
        assert plan.exists(), "retention deleted a run that was still being written"
        out, _ = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert "DONE 0 30" in out
    notes = list((root / "leased" / "v0").glob("replicate_*/baseline/slow/note.txt"))
    assert len(notes) == 30
    assert not (root / "leased" / "v0" / LEASE).exists()  # a finished run drops its lease


def write_version(root: Path, version: int, *, finished: bool, lease_age: float | None) -> None:
    folder = root / "exp" / f"v{version}"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text("{}")
    if finished:
        (folder / "run.json").write_text("{}")
    if lease_age is not None:
        lease = {"renewed_at": time.time() - lease_age, "expires_after": 60.0, "pid": 1, "host": "h"}
        (folder / LEASE).write_text(json.dumps(lease))


def test_prune_deletes_finished_and_expired_versions_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_version(root, 0, finished=True, lease_age=None)  # finished: may go
    write_version(root, 1, finished=False, lease_age=3600)  # its writer died an hour ago: may go
    write_version(root, 2, finished=False, lease_age=5)  # being written: stays
    write_version(root, 3, finished=False, lease_age=None)  # nothing says it is dead: stays
    write_version(root, 4, finished=True, lease_age=None)  # the newest: kept by retention
    removed = prune_versions(Store(str(root)), "exp", keep=1)
    assert removed == [0, 1]
    assert sorted(p.name for p in (root / "exp").iterdir()) == ["v2", "v3", "v4"]


def test_a_finished_run_leaves_no_lease(tmp_path: Path) -> None:
    root = tmp_path / "data"
    exp = Experiment(
        zero(),
        Pipeline([quick()]),
        name="plain",
        plugins=[ArtifactPlugin(root_dir=str(root)), SeedPlugin(seed=2), SerialExecution(progress=False)],
    )
    assert exp.run().failed == 0
    assert (root / "plain" / "v0" / "run.json").exists()
    assert not (root / "plain" / "v0" / LEASE).exists()
