"""Several Ray nodes on this machine (``ray.cluster_utils.Cluster``: head + 2 workers), each scenario in
its own process because the test session holds its own Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
SCRIPT = Path(__file__).with_name("cluster_scenarios.py")


def run_scenario(name: str, workdir: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), name, str(workdir)], capture_output=True, text=True, timeout=240
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"scenario {name} printed no result:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.timeout(300)
def test_local_store_on_several_nodes_artifacts_come_back_to_the_driver_once_each(tmp_path: Path) -> None:
    seen = run_scenario("artifacts", tmp_path)
    assert seen["failed"] == 0 and seen["executor"]["nodes"] == 3
    assert seen["nodes_used"] == 2  # both worker nodes ran replicates
    expected = sorted(
        f"data/cluster/v0/replicate_{r}/{c}/write_note/note.txt" for r in range(8) for c in ("baseline", "shift")
    )
    assert seen["artifact_files"] == expected
    assert seen["artifact_contents_ok"]
    assert seen["manifest_paths"] == sorted(str(tmp_path / f) for f in expected)


@pytest.mark.timeout(300)
def test_losing_a_node_mid_run_still_completes_every_replicate_exactly_once(tmp_path: Path) -> None:
    seen = run_scenario("node_loss", tmp_path)
    assert seen["removed_during_run"], seen
    assert seen["alive_nodes_after"] == 2
    assert seen["failed"] == 0, seen["errors"]
    for condition, offset in (("baseline", 1.0), ("shift", 11.0)):
        assert seen["replicates"][condition] == list(range(30))
        assert seen["values"][condition] == [offset + r for r in range(30)]
    assert len(seen["artifact_files"]) == 60
