"""Kill a run whose store is S3 (moto on loopback), resume it, and get the uninterrupted run's metrics."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from s3_server import list_keys, moto_endpoint, s3_bucket  # noqa: F401 - fixtures
from test_resume import KILL_REPLICATES, KILL_SCRIPT, executions

from crystallize import load_run
from crystallize.store.filesystem import Store
from crystallize.store.records import load_outcomes


def _launch(script: Path, folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "stderr.txt", "a"),
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def test_killed_run_on_s3_resumes_where_it_stopped(tmp_path: Path, moto_endpoint: str, s3_bucket: str) -> None:  # noqa: F811
    script = tmp_path / "killable.py"
    script.write_text(KILL_SCRIPT.replace("REPLICATES", str(KILL_REPLICATES)))
    data_uri = f"s3://{s3_bucket}/data"
    work, ref = tmp_path / "work", tmp_path / "reference"
    base = {k: v for k, v in os.environ.items() if not k.startswith("CRYSTALLIZE_")}
    base["CRYSTALLIZE_S3_ENDPOINT"] = moto_endpoint
    on_s3 = {**base, "CRYSTALLIZE_DATA_URI": data_uri, "EXEC_LOG": str(work / "executions.log"), "STEP_SLEEP": "0.1"}
    local = {**base, "EXEC_LOG": str(ref / "executions.log"), "STEP_SLEEP": "0"}

    reference = _launch(script, ref, local, "--out", "reference.json")
    proc = _launch(script, work, on_s3, "--out", "first.json")
    try:
        deadline = time.monotonic() + 60
        while len([k for k in list_keys(moto_endpoint, s3_bucket, "data/killed/v0/outcomes/") if "part-" in k]) < 2:
            assert proc.poll() is None, (work / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "no outcome records reached S3 within 60 s"
            time.sleep(0.05)
    finally:
        _kill(proc)
    reference.wait(timeout=120)
    before = executions(work)
    keys = list_keys(moto_endpoint, s3_bucket, "data/killed/v0/")
    assert not any(k.endswith("run.json") for k in keys)

    recorded = load_outcomes(Store(data_uri), "killed", 0)
    every = {(c, r) for c in ("baseline", "shifted") for r in range(KILL_REPLICATES)}
    assert 0 < len(recorded) < len(every), "the kill must land mid-run"
    assert load_run(f"{data_uri}/killed/v0").provenance["finished"] is False

    resume = _launch(script, work, on_s3, "--strategy", "resume", "--out", "out.json")
    resume.wait(timeout=120)
    assert resume.returncode == 0, (work / "stderr.txt").read_text()
    rerun = executions(work)[len(before) :]
    assert not set(rerun) & set(recorded)
    assert collections.Counter(rerun) == collections.Counter(every - set(recorded))
    resumed = json.loads((work / "out.json").read_text())
    expected = json.loads((ref / "reference.json").read_text())
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["resumed"] == {"version": 0, "reused": len(recorded)}
    assert any(k.endswith("killed/v0/run.json") for k in list_keys(moto_endpoint, s3_bucket, "data/"))
