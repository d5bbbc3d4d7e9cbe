"""``crystallize run TARGET --dry-run``: the plan of a run (experiments in order, conditions x replicates,
tasks, batching, executor, where data and caches go), with nothing run, started or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli import write_experiment
from test_show_errors import SCRIPT as FRAGILE
from test_yaml import CONSUMER, PRODUCER, experiment_folder, write

from crystallize.cli.main import main

CACHED = """
from crystallize import Experiment, Pipeline, SerialExecution, data_source, pipeline_step


@data_source
def numbers(ctx):
    return [1.0, 2.0]


@pipeline_step(cacheable=True)
def slow_square(data, ctx):
    return [x * x for x in data]


@pipeline_step()
def total(data, ctx):
    return data, {"total": sum(data)}


experiment = Experiment(
    datasource=numbers(),
    pipeline=Pipeline([slow_square(), total()]),
    plugins=[SerialExecution(progress=False)],
    replicates=2,
    name="cached",
)
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder of the command, with no store or cache set from outside."""
    for name in ("CRYSTALLIZE_DATA_URI", "CRYSTALLIZE_CACHE_URI", "CRYSTALLIZE_NO_CACHE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dry(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["run", *args, "--dry-run"]) == 0
    return capsys.readouterr().out


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: a dry run must change none."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_an_experiment_file_lists_its_tasks_and_batching_and_writes_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_experiment(folder, treatments='treatment("boost", {"delta": 10.0}), treatment("small", {"delta": 0.1})')
    out = dry(capsys, "experiment.py", "--seed", "7")
    assert "dry run of experiment.py: nothing runs and nothing is written" in out
    assert "1. demo\n   3 condition(s) x 6 replicate(s) = 18 task(s): baseline, boost, small" in out
    assert "executor: serial: in this process, one replicate after another (no batches)" in out
    assert "data: data/demo/v0 (a new version)" in out
    assert "step cache: not used (no step is cacheable)" in out
    assert "seed: 7" in out
    assert "1 experiment(s), 18 task(s) to run" in out

    out = dry(capsys, "experiment.py", "--executor", "thread", "--workers", "3", "--replicates", "10")
    assert "3 condition(s) x 10 replicate(s) = 30 task(s)" in out
    assert "executor: thread: 3 threads of this process" in out
    assert "1 replicate each until a duration is measured, then sized to ~50 ms of work each" in out
    assert "the count depends on those durations (1 to 30 batches)" in out
    assert "seed: drawn when the run starts" in out

    assert sorted(p.name for p in folder.iterdir()) == ["experiment.py"]  # no data/, no calls.txt: nothing ran


def test_ray_is_neither_started_nor_joined(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    import crystallize_ray.connection

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run must not start or connect to Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(crystallize_ray.connection, "ensure_connected", refuse)
    write_experiment(folder, replicates=4)

    out = dry(capsys, "experiment.py", "--executor", "ray")
    assert "executor: ray: would start a private local Ray on 127.0.0.1 for this command" in out
    assert "2 condition(s) x 4 replicate(s) = 8 task(s): baseline, boost" in out
    assert "each replicate asks for 1 CPU; tasks in flight follow the cluster's CPUs" in out
    assert "batches (one Ray task each): 1 replicate each until a duration is measured" in out

    out = dry(capsys, "experiment.py", "--executor", "ray", "--address", "127.0.0.1:1")
    assert "executor: ray: would connect to the Ray cluster at 127.0.0.1:1" in out
    assert "the local data folder is written by the driver" in out  # a cluster and a local store
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    out = dry(capsys, "experiment.py", "--executor", "ray")
    assert "would connect to the Ray cluster at ray://127.0.0.1:1 (from $RAY_ADDRESS)" in out
    assert sorted(p.name for p in folder.iterdir()) == ["experiment.py"]


def test_a_graph_folder_runs_dependencies_first_and_resume_skips_what_is_complete(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(folder / "graph" / "producer", PRODUCER)
    write(folder / "graph" / "consumer", CONSUMER)
    out = dry(capsys, "graph", "--executor", "process", "--workers", "2")
    producer, consumer = out.index("1. producer\n"), out.index("2. consumer (after producer)\n")
    assert producer < consumer
    assert "1 condition(s) x 3 replicate(s) = 3 task(s): baseline" in out[producer:consumer]
    assert "2 condition(s) x 3 replicate(s) = 6 task(s): baseline, doubled" in out[consumer:]
    assert out.count("executor: process: 2 worker processes") == 2
    assert "data: data/producer/v0 (a new version)" in out and "data: data/consumer/v0 (a new version)" in out
    assert "2 experiment(s), 9 task(s) to run" in out
    assert not (folder / "data").exists()

    assert main(["run", "graph", "--executor", "serial", "--quiet"]) == 0
    before = tree(folder / "data")
    out = dry(capsys, "graph", "--resume")
    assert "1. producer (skipped: already complete)" in out
    assert "2. consumer (after producer) (skipped: already complete)" in out
    assert "data: data/consumer/v0: finished and unchanged" in out
    assert "2 experiment(s), 0 task(s) to run" in out
    out = dry(capsys, "graph")
    assert "data: data/producer/v1 (a new version; v0 exists)" in out
    assert tree(folder / "data") == before  # read, never written


def test_a_yaml_experiment_and_a_resumable_run_with_failures(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment_folder(
        folder,
        "name: yexp\nreplicates: 4\ndatasource: fetch_numbers\nsteps: [add_delta, summarize]\n"
        "treatments: {boost: {delta: 1.0}}\n",
        name="yexp",
    )
    out = dry(capsys, "yexp")
    assert "1. yexp\n   2 condition(s) x 4 replicate(s) = 8 task(s): baseline, boost" in out
    assert "data: data/yexp/v0 (a new version)" in out
    assert "3 condition(s)" not in dry(capsys, "yexp/config.yaml", "--replicates", "5")
    assert "2 condition(s) x 5 replicate(s) = 10 task(s)" in dry(capsys, "yexp/config.yaml", "--replicates", "5")

    (folder / "fragile.py").write_text(FRAGILE)
    assert main(["run", "fragile.py", "--quiet", "--seed", "4"]) == 0  # 8 of 24 replicates fail
    before = tree(folder / "data")
    out = dry(capsys, "fragile.py", "--resume")
    assert "2 condition(s) x 12 replicate(s) = 24 task(s): baseline, shifted" in out
    assert "data: data/fragile/v0 (resumed: 16 of 24 task(s) recorded, 8 to run)" in out
    assert "seed: 4 (the resumed run's)" in out
    assert "1 experiment(s), 8 task(s) to run" in out
    (folder / "fragile.py").write_text(FRAGILE.replace('"delta": 1.0', '"delta": 2.0'))
    out = dry(capsys, "fragile.py", "--resume")
    assert "data/fragile/v0: --resume would stop, the experiment changed since it ran (" in out
    assert "run without --resume for a new version" in out
    assert tree(folder / "data") == before
    assert not (folder / "data" / "yexp").exists()


def test_the_step_cache_location_and_how_it_is_turned_off(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "cached.py").write_text(CACHED)
    assert "step cache: .cache (cacheable: slow_square)" in dry(capsys, "cached.py")
    assert "step cache: off (--no-cache)" in dry(capsys, "cached.py", "--no-cache")
    assert os.environ.get("CRYSTALLIZE_NO_CACHE") is None  # the dry run leaves the environment as it was
    monkeypatch.setenv("CRYSTALLIZE_NO_CACHE", "1")
    assert "step cache: off ($CRYSTALLIZE_NO_CACHE)" in dry(capsys, "cached.py")
    monkeypatch.delenv("CRYSTALLIZE_NO_CACHE")
    monkeypatch.setenv("CRYSTALLIZE_CACHE_URI", str(folder / "elsewhere"))
    assert "step cache: elsewhere (cacheable: slow_square)" in dry(capsys, "cached.py")
    assert sorted(p.name for p in folder.iterdir()) == ["cached.py"]
