"""Resume: a killed run continues where it stopped, reusing what it recorded and nothing else.

Also the run records themselves (plan first, outcome parts, metrics, ``run.json`` last),
``load_run`` on finished and interrupted runs, and version retention.

Every step here appends ``condition,replicate`` to ``executions.log`` in the test's
folder, so executions can be counted across processes and across runs. The folder reaches
the steps as ``ctx["workdir"]`` (absolute), since worker processes (Ray) may sit elsewhere.
"""

from __future__ import annotations

import collections
import importlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crystallize import (
    ArtifactPlugin,
    Experiment,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    Treatment,
    ValidationError,
    data_source,
    hypothesis,
    load_run,
    pipeline_step,
    verifier,
)
from crystallize.store.filesystem import Store
from crystallize.store.records import load_outcomes

EXEC_LOG = "executions.log"
FAIL_FLAG = "fail.flag"  # lines "condition,replicate": those replicates raise RuntimeError
INTERRUPT_FLAG = "interrupt.flag"  # lines "condition,replicate": those raise KeyboardInterrupt (Ctrl-C)


# ---------------------------------------------------------------- module-level parts


def _flagged(flag: str, ctx) -> bool:
    path = Path(ctx["workdir"]) / flag
    return path.exists() and f"{ctx['condition']},{ctx['replicate']}" in path.read_text().split()


@data_source
def draws(ctx):
    return [random.random(), float(np.random.random())]


@pipeline_step
def noisy(data, ctx, *, shift=0.0, scale=1.0):
    with open(Path(ctx["workdir"]) / EXEC_LOG, "a") as log:
        log.write(f"{ctx['condition']},{ctx['replicate']}\n")
    if _flagged(INTERRUPT_FLAG, ctx):
        raise KeyboardInterrupt
    if _flagged(FAIL_FLAG, ctx):
        raise RuntimeError(f"flaky failure of {ctx['condition']}/{ctx['replicate']}")
    value = (sum(data) + shift + random.random() + float(np.random.normal())) * scale
    return data, {"value": value}


@pipeline_step
def write_note(data, ctx):
    ctx.artifacts.add("note.txt", f"{ctx['condition']}:{ctx['replicate']}".encode())
    return data


@verifier
def mean_gap(baseline, treatment):
    return {"gap": float(np.mean(treatment["value"]) - np.mean(baseline["value"])), "p_value": 0.01}


@hypothesis(verifier=mean_gap(), metrics="value")
def gap(result):
    return result["gap"]


def make(
    name="exp",
    *,
    steps=None,
    treatments=None,
    replicates=4,
    seed=11,
    execution=None,
    plugins=(),
    hypotheses=(),
):
    return Experiment(
        draws(),
        Pipeline(list(steps) if steps is not None else [noisy()]),
        [SeedPlugin(seed=seed), execution or SerialExecution(progress=False), *plugins],
        name=name,
        treatments=list(treatments) if treatments is not None else [Treatment("t", {"shift": 1.0})],
        hypotheses=list(hypotheses),
        replicates=replicates,
        initial_ctx={"workdir": os.getcwd()},
    )


def executions(folder: Path | str = ".") -> list[tuple[str, int]]:
    path = Path(folder) / EXEC_LOG
    if not path.exists():
        return []
    rows = (line.split(",") for line in path.read_text().splitlines() if line)
    return [(row[0], int(row[1])) for row in rows]


def values(result) -> dict[str, dict[str, list]]:
    return {name: dict(tm.metrics) for name, tm in result.metrics.conditions()}


def by_replicate(result, metric="value") -> dict[tuple[str, int], list]:
    return {
        (name, replicate): items
        for name, tm in result.metrics.conditions()
        for replicate, items in tm.by_replicate(metric).items()
    }


def hypothesis_view(result) -> list:
    """Hypothesis results in JSON form (``run.json`` stores tuples as lists)."""
    return json.loads(
        json.dumps([[h.name, h.results, h.ranking, h.dropped_pairs, h.errors] for h in result.metrics.hypotheses])
    )


def version_dirs(experiment="exp") -> list[str]:
    folder = Path("data") / experiment
    return sorted((p.name for p in folder.iterdir() if re.fullmatch(r"v\d+", p.name)), key=lambda n: int(n[1:]))


# ---------------------------------------------------------------- 1. kill -9 and resume

KILL_SCRIPT = """
import argparse
import json
import os
import random
import time

import numpy as np

from crystallize import (
    Experiment, ParallelExecution, Pipeline, SeedPlugin, SerialExecution, Treatment, data_source, pipeline_step,
)

LOG = os.environ["EXEC_LOG"]
SLEEP = float(os.environ.get("STEP_SLEEP", "0"))


@data_source
def draws(ctx):
    return [random.random(), float(np.random.random())]


@pipeline_step
def slow_noise(data, ctx, *, shift=0.0):
    time.sleep(SLEEP)
    value = sum(data) + shift + random.random() + float(np.random.normal())
    with open(LOG, "a") as log:
        log.write(f"{ctx['condition']},{ctx['replicate']},{os.getpid()}\\n")
        log.flush()
    return data, {"value": value}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--executor", default="serial")
    parser.add_argument("--strategy", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.executor == "process":
        execution = ParallelExecution(max_workers=2, executor_type="process", progress=False)
    else:
        execution = SerialExecution(progress=False)
    experiment = Experiment(
        draws(),
        Pipeline([slow_noise()]),
        [SeedPlugin(seed=2024), execution],
        name="killed",
        treatments=[Treatment("shifted", {"shift": 1.0})],
        replicates=REPLICATES,
    )
    result = experiment.run(strategy=args.strategy)
    metrics = {name: tm.metrics for name, tm in result.metrics.conditions()}
    with open(args.out, "w") as out:
        json.dump(
            {
                "metrics": metrics,
                "resumed": result.provenance.get("resumed"),
                "version": result.provenance["version"],
                "errors": {c: sorted(e) for c, e in result.replicate_errors.items()},
            },
            out,
        )


if __name__ == "__main__":
    main()
"""

KILL_REPLICATES = 16
KILL_SLEEP = 0.06


def _script_env(folder: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRYSTALLIZE_DATA_URI", None)
    env.pop("CRYSTALLIZE_CACHE_URI", None)
    env.pop("CRYSTALLIZE_CACHE_DIR", None)
    env["EXEC_LOG"] = str(folder / EXEC_LOG)
    env["STEP_SLEEP"] = str(sleep)
    return env


def _launch(script: Path, folder: Path, sleep: float, *args: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=folder,
        env=_script_env(folder, sleep),
        stdout=subprocess.DEVNULL,
        stderr=open(folder / f"stderr-{len(list(folder.glob('stderr-*')))}.txt", "w"),
        start_new_session=True,  # its own process group: the kill reaches its worker processes too
    )


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run (no finally blocks, no flush, no run.json) and any worker it started."""
    if proc.poll() is None:
        proc.kill()
        try:  # the driver is killed or a zombie until wait(), so its group id cannot be reused yet
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def _wait_gone(pids: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"process {pid} of the killed run is still alive")


def _finish(proc: subprocess.Popen, folder: Path, timeout: float = 60) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        _kill(proc)
    stderr = "\n".join(p.read_text() for p in sorted(folder.glob("stderr-*.txt")))
    assert proc.returncode == 0, stderr


KILL_POINTS = {  # executions logged before the SIGKILL: at the first, a middle and the last replicate
    "first": 1,
    "middle": KILL_REPLICATES,
    "last": 2 * KILL_REPLICATES - 1,
}


@pytest.mark.parametrize("when", list(KILL_POINTS))
@pytest.mark.parametrize("executor", ["serial", "process"])
def test_killed_run_resumes_where_it_stopped(tmp_path: Path, executor: str, when: str) -> None:
    script = tmp_path / "killable.py"
    script.write_text(KILL_SCRIPT.replace("REPLICATES", str(KILL_REPLICATES)))
    work, ref = tmp_path / "work", tmp_path / "reference"
    every = {(c, r) for c in ("baseline", "shifted") for r in range(KILL_REPLICATES)}

    # the uninterrupted reference (same seed, fresh folder; sleeping does not change any value)
    reference_proc = _launch(script, ref, 0.0, "--executor", executor, "--out", "reference.json")
    proc = _launch(script, work, KILL_SLEEP, "--executor", executor, "--out", "first.json")
    try:
        deadline = time.monotonic() + 30
        while len(executions(work)) < KILL_POINTS[when]:
            assert proc.poll() is None, "the run ended before it could be killed; make it slower"
            assert time.monotonic() < deadline, f"{KILL_POINTS[when]} replicates did not run within 30 s"
            time.sleep(0.002)
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    _finish(reference_proc, ref)
    log = (work / EXEC_LOG).read_text().splitlines()
    _wait_gone({int(line.split(",")[2]) for line in log})  # workers of the process pool too
    before = executions(work)

    assert not (work / "data/killed/v0/run.json").exists()
    assert not (work / "first.json").exists()
    recorded = load_outcomes(Store(str(work / "data")), "killed", 0)
    assert all(o.error is None for o in recorded.values())
    assert len(recorded) < len(every), "the kill must land before the end"
    assert set(recorded) <= set(before)

    reference = json.loads((ref / "reference.json").read_text())
    assert reference["errors"] == {} and reference["resumed"] is None
    expected = {
        (c, r): [v]
        for c, metrics in reference["metrics"].items()
        for r, v in zip(range(KILL_REPLICATES), metrics["value"], strict=True)
    }

    # the interrupted version reopens as an unfinished Result holding exactly what was recorded
    interrupted = load_run(work / "data" / "killed" / "v0")
    assert interrupted.provenance["finished"] is False
    assert by_replicate(interrupted) == {key: expected[key] for key in recorded}

    resume_proc = _launch(script, work, KILL_SLEEP, "--executor", executor, "--strategy", "resume", "--out", "out.json")
    _finish(resume_proc, work)
    resumed = json.loads((work / "out.json").read_text())
    rerun = executions(work)[len(before) :]

    # nothing recorded before the kill ran again; everything else ran exactly once
    assert not set(rerun) & set(recorded)
    assert collections.Counter(rerun) == collections.Counter(every - set(recorded))
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["errors"] == {}
    assert resumed["version"] == 0
    assert resumed["resumed"] == {"version": 0, "reused": len(recorded)}

    assert (work / "data/killed/v0/run.json").is_file()
    assert (work / "data/killed/v0/metrics.parquet").is_file()
    assert sorted(p.name for p in (work / "data/killed").iterdir()) == ["v0"]
    reopened = load_run(work / "data" / "killed" / "v0")
    assert reopened.provenance["finished"] is True
    assert reopened.provenance["resumed"] == {"version": 0, "reused": len(recorded)}
    assert values(reopened) == reference["metrics"]


def test_interrupted_in_process_run_resumes() -> None:
    """Ctrl-C inside a replicate: the recorded outcomes are flushed, the rest runs on resume."""
    Path(INTERRUPT_FLAG).write_text("baseline,2\n")
    with pytest.raises(KeyboardInterrupt):
        make(hypotheses=[gap]).run()
    assert Path("data/exp/v0/plan.json").is_file()
    assert not Path("data/exp/v0/run.json").exists()
    assert executions() == [("baseline", 0), ("t", 0), ("baseline", 1), ("t", 1), ("baseline", 2)]
    Path(INTERRUPT_FLAG).unlink()
    reference = make("ref", hypotheses=[gap]).run()

    interrupted = load_run("data/exp/v0")
    assert interrupted.provenance["finished"] is False
    assert interrupted.provenance["version"] == 0
    assert interrupted.metrics.hypotheses == []
    expected = by_replicate(reference)
    assert by_replicate(interrupted) == {k: v for k, v in expected.items() if k[1] < 2}

    done = len(executions())
    resumed = make(hypotheses=[gap]).run(strategy="resume")
    assert sorted(executions()[done:]) == [("baseline", 2), ("baseline", 3), ("t", 2), ("t", 3)]
    assert values(resumed) == values(reference)
    assert hypothesis_view(resumed) == hypothesis_view(reference)
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 4}
    assert load_run("data/exp").provenance["finished"] is True


# ---------------------------------------------------------------- 2. failed replicates


def test_resume_reruns_failed_replicates_only(execution) -> None:
    Path(FAIL_FLAG).write_text("t,2\n")
    first = make(execution=execution).run()
    assert set(first.replicate_errors) == {"t"} and set(first.replicate_errors["t"]) == {2}
    assert len(executions()) == 8

    Path(FAIL_FLAG).unlink()
    resumed = make(execution=execution).run(strategy="resume")
    assert executions()[8:] == [("t", 2)]
    assert resumed.errors == {}
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 7}
    assert resumed.provenance["replicates_completed"] == {"baseline": 4, "t": 4}
    reference = make("ref").run()
    assert values(resumed) == values(reference)

    # the later record of t/2 replaces the failed one when the run is reopened
    reopened = load_run("data/exp")
    assert reopened.errors == {}
    assert values(reopened) == values(reference)
    assert version_dirs() == ["v0"]

    # resuming the now finished run has nothing left to execute
    done = len(executions())
    again = make(execution=execution).run(strategy="resume")
    assert len(executions()) == done
    assert again.provenance["resumed"] == {"version": 0, "reused": 8}
    assert values(again) == values(reference)


# ---------------------------------------------------------------- 3. what resume refuses


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"steps": [noisy(scale=3.0)]}, "step 'noisy' changed"),
        ({"treatments": [Treatment("t", {"shift": 2.0})]}, "treatment 't' changed its values"),
        ({"treatments": [Treatment("t", {"shift": 1.0}), Treatment("u", {"shift": 5.0})]}, "treatment 'u' was added"),
        ({"replicates": 5}, "the number of replicates: 4 -> 5"),
        ({"seed": 12}, "the seed: 11 -> 12"),
    ],
    ids=["step-param", "treatment-value", "treatment-added", "replicates", "seed"],
)
def test_resume_refuses_a_changed_experiment(changed: dict, message: str) -> None:
    Path(FAIL_FLAG).write_text("t,1\n")  # leave something to resume
    make(steps=[noisy(scale=2.0)]).run()
    Path(FAIL_FLAG).unlink()
    plan = Path("data/exp/v0/plan.json").read_bytes()
    done = len(executions())

    kwargs = {"steps": [noisy(scale=2.0)], **changed}
    with pytest.raises(ValidationError, match=re.escape(message)) as caught:
        make(**kwargs).run(strategy="resume")
    assert "cannot resume 'exp' v0" in str(caught.value)
    assert "strategy='resume'" in str(caught.value)  # says how to proceed
    assert len(executions()) == done
    assert Path("data/exp/v0/plan.json").read_bytes() == plan
    assert version_dirs() == ["v0"]
    # the unchanged experiment still resumes
    resumed = make(steps=[noisy(scale=2.0)]).run(strategy="resume")
    assert executions()[done:] == [("t", 1)]
    assert resumed.errors == {}


STEPS_V1 = """
from crystallize import pipeline_step


@pipeline_step
def transform(data, ctx):
    return [x + 1.0 for x in data]
"""

STEPS_V2 = """
from crystallize import pipeline_step


@pipeline_step
def transform(data, ctx):
    return [2.0 * x + 1.0 for x in data]
"""


def test_resume_refuses_changed_step_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same module, same function name, a different body: the edited step is named."""
    module_name = "resume_edited_steps"
    (tmp_path / f"{module_name}.py").write_text(STEPS_V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    old = importlib.import_module(module_name)
    make(steps=[old.transform(), noisy()]).run()
    done = len(executions())

    (tmp_path / f"{module_name}.py").write_text(STEPS_V2)
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    del sys.modules[module_name]
    new = importlib.import_module(module_name)
    old_step, new_step = old.transform(), new.transform()
    assert (new_step.fn.__module__, new_step.fn.__qualname__) == (old_step.fn.__module__, old_step.fn.__qualname__)

    with pytest.raises(ValidationError, match=re.escape("step 'transform' changed")) as caught:
        make(steps=[new_step, noisy()]).run(strategy="resume")
    assert "noisy" not in str(caught.value)  # only the edited step is blamed
    assert len(executions()) == done
    assert version_dirs() == ["v0"]


def test_resume_adopts_the_stored_root_seed() -> None:
    Path(FAIL_FLAG).write_text("baseline,1\nt,3\n")
    first = make(seed=None).run()
    root = first.provenance["root_seed"]
    assert isinstance(root, int)
    Path(FAIL_FLAG).unlink()

    resumed = make(seed=None).run(strategy="resume")
    assert executions()[8:] == [("baseline", 1), ("t", 3)]
    assert resumed.provenance["root_seed"] == root
    assert resumed.errors == {}
    reference = make("ref", seed=root).run()
    assert values(resumed) == values(reference)
    kept = by_replicate(first)
    assert {k: v for k, v in by_replicate(resumed).items() if k in kept} == kept
    assert resumed.provenance["seeds"] == reference.provenance["seeds"]


# ---------------------------------------------------------------- 4. resume with nothing / everything done


def test_resume_without_a_previous_run_starts_v0() -> None:
    result = make(hypotheses=[gap]).run(strategy="resume")
    assert result.provenance["version"] == 0
    assert "resumed" not in result.provenance
    assert result.errors == {}
    assert len(executions()) == 8
    assert Path("data/exp/v0/plan.json").is_file()
    assert Path("data/exp/v0/run.json").is_file()
    assert values(result) == values(make("ref", hypotheses=[gap]).run())


def test_resume_of_a_finished_run_executes_nothing_and_rerun_claims_v1() -> None:
    first = make(hypotheses=[gap]).run()
    assert len(executions()) == 8

    built = (
        Experiment.builder("exp")
        .datasource(draws())
        .add_step(noisy())
        .plugins([SeedPlugin(seed=11), SerialExecution(progress=False)])
        .treatments([Treatment("t", {"shift": 1.0})])
        .hypotheses([gap])
        .replicates(4)
        .initial_ctx({"workdir": os.getcwd()})
        .strategy("resume")
        .build()
    )
    again = built.run()
    assert len(executions()) == 8
    assert again.provenance["resumed"] == {"version": 0, "reused": 8}
    assert again.provenance["version"] == 0
    assert values(again) == values(first)
    assert hypothesis_view(again) == hypothesis_view(first)
    assert again.metrics.hypotheses[0].results["t"]["gap"] == first.metrics.hypotheses[0].results["t"]["gap"]
    assert version_dirs() == ["v0"]

    second = make(hypotheses=[gap]).run()
    assert second.provenance["version"] == 1
    assert len(executions()) == 16
    assert values(second) == values(first)
    assert version_dirs() == ["v0", "v1"]
    # resume continues the latest version
    third = make(hypotheses=[gap]).run(strategy="resume")
    assert third.provenance["resumed"] == {"version": 1, "reused": 8}
    assert len(executions()) == 16


# ---------------------------------------------------------------- 5. load_run


def test_load_run_of_a_finished_run() -> None:
    result = make(hypotheses=[gap]).run()
    loaded = load_run("data/exp/v0")
    assert loaded.provenance["finished"] is True
    assert loaded.provenance["version"] == 0
    assert loaded.provenance["root_seed"] == 11
    assert values(loaded) == values(result)
    assert loaded.metrics.baseline.replicates == result.metrics.baseline.replicates
    assert hypothesis_view(loaded) == hypothesis_view(result)
    assert loaded.get_hypothesis("gap").results["t"]["gap"] == result.get_hypothesis("gap").results["t"]["gap"]
    assert loaded.get_hypothesis("gap").ranking["best"] == "t"
    assert loaded.errors == {}


def test_load_run_picks_the_latest_version_and_missing_raises() -> None:
    make().run()
    make().run(replicates=2)
    latest = load_run("data/exp")
    assert latest.provenance["version"] == 1
    assert latest.provenance["replicates"] == 2
    assert latest.metrics.baseline.replicates["value"] == [0, 1]
    assert load_run("data/exp/").provenance["version"] == 1
    assert load_run(Path("data/exp/v0")).provenance["version"] == 0
    assert len(load_run("data/exp/v0").metrics.baseline.metrics["value"]) == 4

    for missing in ("data/nothing", "data/exp/v7", "elsewhere/exp", "elsewhere/exp/v0"):
        with pytest.raises(FileNotFoundError):
            load_run(missing)


# ---------------------------------------------------------------- 6. the records


def test_plan_is_written_first_and_run_json_last_of_the_records(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    original = Store.write_bytes

    def recording(self, relative, data, **options):
        path = original(self, relative, data, **options)
        if not relative.endswith("/lease.json") and "/holders/" not in relative:  # renewed on their own clock
            events.append(relative.split("/v0/", 1)[-1])
        return path

    monkeypatch.setattr(Store, "write_bytes", recording)

    @pipeline_step
    def observe(data, ctx):
        events.append(f"step {ctx['condition']},{ctx['replicate']}")
        return data, {"plan_existed": float(Path("data/exp/v0/plan.json").is_file())}

    result = make(steps=[noisy(), observe(), write_note()]).run()
    assert result.errors == {}
    assert set(result.metrics.baseline.metrics["plan_existed"]) == {1.0}
    first_step = next(i for i, e in enumerate(events) if e.startswith("step "))
    assert events[0] == "plan.json"
    assert events.index("plan.json") < first_step
    # run.json ends the records; only the files derived from them for 0.27's tools come after it
    records = [e for e in events if not e.endswith(("results.json", ".crystallize_complete", "_manifest.json"))]
    assert records[-3:] == ["metrics.parquet", "run.json", "metadata.json"]
    assert events.index("run.json") == len(records) - 2
    assert sum(e.startswith("step ") for e in events) == 8
    assert sum(e.startswith("outcomes/part-") for e in events) >= 1
    last_part = max(i for i, e in enumerate(events) if e.startswith("outcomes/part-"))
    last_step = max(i for i, e in enumerate(events) if e.startswith("step "))
    assert last_step < last_part < events.index("metrics.parquet")
    run_dir = Path("data/exp/v0")
    assert (run_dir / "metrics.parquet").stat().st_mtime_ns <= (run_dir / "run.json").stat().st_mtime_ns
    assert (run_dir / "plan.json").stat().st_mtime_ns <= (run_dir / "metrics.parquet").stat().st_mtime_ns
    assert not list(run_dir.rglob("*.tmp")), "no temporary files are left behind"


def test_damaged_outcome_part_is_skipped_and_rerun(caplog: pytest.LogCaptureFixture) -> None:
    first = make().run()
    store = Store("data")
    assert set(load_outcomes(store, "exp", 0)) == set(by_replicate(first))
    parts = sorted(Path("data/exp/v0/outcomes").glob("part-*"))
    assert len(parts) >= 2
    victim = max(parts, key=lambda p: p.stat().st_size)
    blob = victim.read_bytes()
    victim.write_bytes(blob[: len(blob) // 2])
    lost = set(by_replicate(first)) - set(load_outcomes(store, "exp", 0))
    assert 0 < len(lost) < 8
    done = len(executions())

    with caplog.at_level(logging.WARNING, logger="crystallize"):
        damaged = load_run("data/exp/v0")
    assert set(by_replicate(damaged)) == set(by_replicate(first)) - lost
    assert any(r.levelno == logging.WARNING and victim.name in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        resumed = make().run(strategy="resume")
    assert any(
        r.levelno == logging.WARNING and "unreadable" in r.getMessage() and victim.name in r.getMessage()
        for r in caplog.records
    )
    assert sorted(executions()[done:]) == sorted(lost)
    assert resumed.provenance["resumed"] == {"version": 0, "reused": 8 - len(lost)}
    assert resumed.errors == {}
    assert values(resumed) == values(first)


# ---------------------------------------------------------------- 7. retention


def test_artifact_retention_keeps_the_newest_two_versions() -> None:
    for run in range(4):
        result = make(steps=[noisy(), write_note()], plugins=[ArtifactPlugin(artifact_retention=2)]).run()
        assert result.provenance["version"] == run
        assert version_dirs() == [f"v{v}" for v in range(max(0, run - 1), run + 1)]
        note = Path(f"data/exp/v{run}/replicate_3/t/write_note/note.txt")
        assert note.read_bytes() == b"t:3"
        assert Path(f"data/exp/v{run}/run.json").is_file()


def test_retention_never_deletes_the_version_being_written(monkeypatch: pytest.MonkeyPatch) -> None:
    import crystallize.experiment as experiment_module

    make().run()  # v0
    real_claim = experiment_module.claim_version

    def claim_while_two_other_runs_start(store, experiment):
        mine = real_claim(store, experiment)
        real_claim(store, experiment)
        real_claim(store, experiment)
        return mine

    deleted: list[str] = []
    original_delete = Store.delete

    def recording_delete(self, relative):
        deleted.append(relative)
        original_delete(self, relative)

    monkeypatch.setattr(experiment_module, "claim_version", claim_while_two_other_runs_start)
    monkeypatch.setattr(Store, "delete", recording_delete)
    result = make(steps=[noisy(), write_note()], plugins=[ArtifactPlugin(artifact_retention=2)]).run()

    assert result.provenance["version"] == 1
    leases = [d for d in deleted if d.endswith("/lease.json") or "/holders/" in d]  # v1 dropped its own lease
    assert [d for d in deleted if d not in leases] == ["exp/v0"]
    assert version_dirs() == ["v1", "v2", "v3"]
    assert Path("data/exp/v1/run.json").is_file()
    assert Path("data/exp/v1/replicate_0/baseline/write_note/note.txt").read_bytes() == b"baseline:0"


def test_resume_after_a_crash_before_the_plan_was_written() -> None:
    """Killed between claiming v0 and writing plan.json (in a slow step setup, say): resume starts afresh."""
    Path("data/exp/v0").mkdir(parents=True)
    result = make().run(strategy="resume")
    assert "resumed" not in result.provenance
    assert result.errors == {}
    assert len(executions()) == 8
    assert values(result) == values(make("ref").run())
    again = make().run(strategy="resume")
    assert again.provenance["resumed"] == {"version": result.provenance["version"], "reused": 8}
    assert len(executions()) == 16  # 8 above + 8 for "ref"; the second resume ran nothing


def test_unversioned_rerun_does_not_reuse_the_previous_runs_records() -> None:
    """``versioned=False`` reruns into v0: the old run's outcomes must not leak into the new one."""
    make(plugins=[ArtifactPlugin(versioned=False)], seed=1).run()
    Path(INTERRUPT_FLAG).write_text("baseline,2\n")
    with pytest.raises(KeyboardInterrupt):
        make(plugins=[ArtifactPlugin(versioned=False)], seed=2).run()
    Path(INTERRUPT_FLAG).unlink()
    interrupted = load_run("data/exp/v0")
    assert interrupted.provenance["finished"] is False
    assert interrupted.provenance["root_seed"] == 2
    assert sorted(by_replicate(interrupted)) == [("baseline", 0), ("baseline", 1), ("t", 0), ("t", 1)]

    done = len(executions())
    resumed = make(plugins=[ArtifactPlugin(versioned=False)], seed=2).run(strategy="resume")
    assert sorted(executions()[done:]) == [("baseline", 2), ("baseline", 3), ("t", 2), ("t", 3)]
    assert values(resumed) == values(make("ref", seed=2).run())
    assert version_dirs() == ["v0"]
    second = make(plugins=[ArtifactPlugin(versioned=False)], seed=3, replicates=2).run()
    assert values(load_run("data/exp/v0")) == values(second)
