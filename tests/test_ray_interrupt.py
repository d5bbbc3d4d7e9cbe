"""Ctrl-C during a Ray run: outstanding tasks are cancelled quickly, finished replicates are kept
(resume works), and no process of ours is left behind. Runs in its own process, which starts its
own private local Ray, exactly as a user's script would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")

SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from ray_steps import slow, zero
    from crystallize import Experiment, Pipeline, SeedPlugin, load_run
    from crystallize_ray import RayExecution

    def build():
        return Experiment(
            datasource=zero(),
            pipeline=Pipeline([slow(seconds=0.3)]),
            plugins=[SeedPlugin(seed=3), RayExecution(progress=False, batch_size=1)],
            replicates=200,
            name="interrupted",
        )

    mode = sys.argv[1]
    if mode == "run":
        try:
            build().run()
            print("FINISHED", flush=True)
        except KeyboardInterrupt:
            print("INTERRUPTED", time.time(), flush=True)
            kept = load_run("data/interrupted/v0")
            print("KEPT", len(kept.metrics.baseline.metrics.get("pid", [])), flush=True)
    else:
        result = build().run(strategy="resume")
        print("RESUMED", result.provenance["resumed"]["reused"], result.failed,
              len(result.metrics.baseline.metrics["pid"]), flush=True)
    """
)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(240)
def test_ctrl_c_cancels_quickly_keeps_finished_replicates_and_leaves_nothing_behind(tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        outcomes = tmp_path / "data" / "interrupted" / "v0" / "outcomes"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(outcomes.glob("part-*"))) < 3:
            time.sleep(0.2)
        assert len(list(outcomes.glob("part-*"))) >= 3, "the run never got going"
        ours = _descendants(proc.pid)
        assert ours, "the script started no Ray processes?"
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert "INTERRUPTED" in lines, out
    # the goal is under 2 s (see benchmarks/fault_timings.py); a loaded CI machine is allowed 5 s
    assert float(lines["INTERRUPTED"]) - sent < 5.0
    kept = int(lines["KEPT"])
    assert 0 < kept < 200

    gone_by = time.monotonic() + 10  # nothing of ours is alive 10 s after the interrupted run ended
    while time.monotonic() < gone_by and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ours):
        time.sleep(0.5)
    left = [p.pid for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"

    resumed = subprocess.run(
        [sys.executable, str(script), "resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    ).stdout
    fields = dict(line.split(" ", 1) for line in resumed.splitlines() if " " in line)["RESUMED"].split()
    assert int(fields[0]) >= kept and fields[1] == "0" and fields[2] == "200"
