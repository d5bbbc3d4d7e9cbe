"""The ``crystallize`` command, used as a person would: in a subprocess, on experiment files written here."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = """
import random

from scipy.stats import ttest_ind

from crystallize import (
    Experiment,
    ParallelExecution,
    SerialExecution,
    data_source,
    hypothesis,
    pipeline_step,
    treatment,
    verifier,
)

CALLS = "calls.txt"


@data_source
def numbers(ctx):
    return [random.random() for _ in range(4)]


@pipeline_step()
def add_delta(data, ctx, *, delta: float = 0.0, fail: str = "never"):
    with open(CALLS, "a") as handle:  # one line per replicate that ran: the tests count them
        handle.write(f"{ctx['condition']} {ctx['replicate']}\\n")
    if fail == "always" or (fail == "first" and ctx["replicate"] == 0):
        raise ValueError(f"deliberate failure in replicate {ctx['replicate']}")
    return [x + delta for x in data]


@pipeline_step()
def summarize(data, ctx):
    return data, {"total": sum(data), "first": data[0]}


@verifier
def welch(baseline, treatment, alpha: float = 0.05):
    _stat, p_value = ttest_ind(treatment["total"], baseline["total"], equal_var=False)
    return {"p_value": float(p_value), "significant": bool(p_value < alpha)}


@hypothesis(verifier=welch(), metrics="total")
def by_p_value(result):
    return result["p_value"]


experiment = (
    Experiment.builder("@NAME@")
    .datasource(numbers())
    .add_step(add_delta())
    .add_step(summarize())
    .plugins([@PLUGINS@])
    .treatments([@TREATMENTS@])
    .hypotheses([by_p_value])
    .replicates(@REPLICATES@)
    .build()
)

if __name__ == "__main__":
    open("main_block_ran", "w").close()
"""


def write_experiment(
    folder: Path,
    *,
    name: str = "demo",
    plugins: str = "",
    treatments: str = 'treatment("boost", {"delta": 10.0})',
    replicates: int = 6,
    filename: str = "experiment.py",
) -> Path:
    source = (
        EXPERIMENT.replace("@NAME@", name)
        .replace("@PLUGINS@", plugins)
        .replace("@TREATMENTS@", treatments)
        .replace("@REPLICATES@", str(replicates))
    )
    path = folder / filename
    path.write_text(source)
    return path


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    environment.pop("CRYSTALLIZE_DATA_URI", None)
    environment.pop("CRYSTALLIZE_NO_CACHE", None)
    environment["COLUMNS"] = "200"
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "crystallize", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def calls(folder: Path) -> list[str]:
    path = folder / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def read_metrics(run_folder: Path):
    import pyarrow.parquet as pq

    return pq.read_table(run_folder / "metrics.parquet").sort_by([("condition", "ascending"), ("metric", "ascending")])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, _session_config_home: Path) -> Path:
    """One finished serial run of ``demo`` (seed 11), shared by the read-only tests (show, export).

    Made with the tests' signing key (the per-user key under their config home): outcome
    parts signed with another key are not trusted, so the tests could not read them.
    """
    folder = tmp_path_factory.mktemp("finished")
    write_experiment(folder, treatments='treatment("boost", {"delta": 10.0}), treatment("small", {"delta": 0.1})')
    env = {"XDG_CONFIG_HOME": str(_session_config_home)}
    ok(cli("run", "experiment.py", "--executor", "serial", "--seed", "11", cwd=folder, env=env))
    return folder


# ---------------------------------------------------------------- run


def test_run_prints_the_summary_and_stores_the_run(tmp_path: Path) -> None:
    write_experiment(tmp_path)
    result = ok(cli("run", "experiment.py", "--executor", "serial", "--replicates", "4", "--seed", "3", cwd=tmp_path))

    out = result.stdout
    assert "demo v0" in out
    for text in ("baseline", "boost", "4/4", "total (mean)", "first (mean)", "by_p_value", "p_value=", "(best)"):
        assert text in out, text
    assert "stored in data/demo/v0" in out
    # no live display on a pipe: one line per condition instead
    assert "demo \u00b7 baseline: 4/4 done, 0 failed" in result.stderr
    assert "demo \u00b7 boost: 4/4 done, 0 failed" in result.stderr
    assert "Experiment 'demo' starting" in result.stderr  # the library's log lines reach the terminal
    assert "\u2501" not in result.stderr  # no bar characters
    assert not (tmp_path / "main_block_ran").exists(), "the target's __main__ block must not run"
    record = json.loads((tmp_path / "data/demo/v0/run.json").read_text())
    assert record["provenance"]["replicates"] == 4
    assert record["provenance"]["root_seed"] == 3
    assert record["provenance"]["executor"]["executor"] == "serial"
    assert len(calls(tmp_path)) == 8


def test_a_treatment_key_nothing_reads_is_a_warning_in_run_show_and_the_record(tmp_path: Path) -> None:
    write_experiment(tmp_path, treatments='treatment("boost", {"delta": 10.0}), treatment("noop", {"unused_knob": 1})')
    result = ok(cli("run", "experiment.py", "--executor", "serial", "--replicates", "3", "--seed", "5", cwd=tmp_path))
    assert "'unused_knob'" in result.stdout + result.stderr
    record = json.loads((tmp_path / "data/demo/v0/run.json").read_text())
    [warning] = record["provenance"]["warnings"]
    assert "'noop'" in warning and "'unused_knob'" in warning
    shown = ok(cli("show", "demo", cwd=tmp_path))
    assert "warning:" in shown.stdout and "unused_knob" in shown.stdout


def test_seed_makes_runs_identical_across_process_and_serial_executors(tmp_path: Path) -> None:
    write_experiment(tmp_path, plugins="SerialExecution()")
    ok(cli("run", "experiment.py", "--executor", "process", "--workers", "2", "--seed", "123", "-q", cwd=tmp_path))
    ok(cli("run", "experiment.py", "--executor", "serial", "--seed", "123", "-q", cwd=tmp_path))
    ok(cli("run", "experiment.py", "--executor", "serial", "-q", cwd=tmp_path))

    first, second, unseeded = (tmp_path / "data/demo" / v for v in ("v0", "v1", "v2"))
    provenance = json.loads((first / "run.json").read_text())["provenance"]
    assert provenance["executor"]["executor"] == "process"
    assert provenance["executor"]["parallelism"] == 2
    assert provenance["root_seed"] == 123
    assert read_metrics(first).num_rows == 2 * 6 * 2
    assert read_metrics(first).equals(read_metrics(second))
    assert not read_metrics(first).equals(read_metrics(unseeded))


def test_live_display_draws_one_bar_per_condition_on_a_terminal(tmp_path: Path) -> None:
    write_experiment(tmp_path, treatments='treatment("boost", {"delta": 10.0}), treatment("flaky", {"fail": "first"})')
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    result = ok(cli("run", "experiment.py", "--executor", "serial", "--replicates", "5", cwd=tmp_path, env=terminal))
    for condition in ("baseline", "boost", "flaky"):
        assert f"demo \u00b7 {condition}" in result.stderr
    assert "5/5" in result.stderr
    assert "1 failed" in result.stderr
    assert "\u2501" in result.stderr  # the bars
    assert "done, 0 failed" not in result.stderr  # the bars replace the summary lines


def test_resume_reruns_nothing_on_a_finished_run(tmp_path: Path) -> None:
    write_experiment(tmp_path, replicates=3)
    ok(cli("run", "experiment.py", "--executor", "serial", "--seed", "5", cwd=tmp_path))
    assert len(calls(tmp_path)) == 6
    before = read_metrics(tmp_path / "data/demo/v0")

    result = ok(cli("run", "experiment.py", "--executor", "serial", "--resume", cwd=tmp_path))
    assert len(calls(tmp_path)) == 6, "a finished run has nothing to rerun"
    assert "6 replicate(s) recorded, 0 to run" in result.stderr
    assert "stored in data/demo/v0" in result.stdout
    assert not (tmp_path / "data/demo/v1").exists()
    assert read_metrics(tmp_path / "data/demo/v0").equals(before)


def test_a_condition_failing_in_every_replicate_exits_1(tmp_path: Path) -> None:
    write_experiment(
        tmp_path,
        treatments='treatment("broken", {"fail": "always"}), treatment("flaky", {"fail": "first"})',
        replicates=3,
    )
    result = cli("run", "experiment.py", "--executor", "process", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "condition 'broken' failed in every replicate: ValueError: deliberate failure" in result.stderr
    assert "'flaky' failed in every" not in result.stderr
    assert "demo \u00b7 broken: 0/3 done, 3 failed" in result.stderr
    assert "demo \u00b7 flaky: 2/3 done, 1 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "data/demo/v0/run.json").exists()  # the run itself finished and is recorded


def test_some_failed_replicates_still_exit_0(tmp_path: Path) -> None:
    write_experiment(tmp_path, treatments='treatment("flaky", {"fail": "first"})', replicates=3)
    result = ok(cli("run", "experiment.py", "--executor", "serial", cwd=tmp_path))
    assert "2/3" in result.stdout
    assert "demo \u00b7 flaky: 2/3 done, 1 failed" in result.stderr


# ---------------------------------------------------------------- usage and target errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "no such file or folder: missing.py"),
        (["run", "empty.py"], "defines no Experiment or ExperimentGraph at module level"),
        (["run", "two.py"], "defines several Experiment objects: first (one), second (two)"),
        (["run", "broken.py"], "raised while being loaded: ZeroDivisionError"),
        (["run", "notes.txt"], "expected a Python file"),
        (["run", "experiment.py", "--executor", "serial", "--address", "auto"], "--address only applies"),
        (["run", "experiment.py", "--executor", "gpu"], "invalid choice: 'gpu'"),
        (["run", "experiment.py", "--replicates", "0"], "expected a positive integer"),
        (["show", "nosuch"], "no run 'nosuch'"),
        (["runs", "nosuch"], "no runs of 'nosuch'"),
    ],
)
def test_usage_and_target_errors_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    write_experiment(tmp_path)
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not an experiment\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    two = (
        "from crystallize import Experiment, data_source, pipeline_step\n"
        "@data_source\ndef d(ctx):\n    return 1\n"
        "@pipeline_step()\ndef s(data, ctx):\n    return data\n"
        "first = Experiment.builder('one').datasource(d()).add_step(s()).build()\n"
        "second = Experiment.builder('two').datasource(d()).add_step(s()).build()\n"
    )
    (tmp_path / "two.py").write_text(two)
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("1 / 0\n")
    result = cli("run", "broken.py", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_picks_the_experiment_named_experiment_among_several(tmp_path: Path) -> None:
    write_experiment(tmp_path, replicates=2)
    with open(tmp_path / "experiment.py", "a") as handle:
        handle.write("other = Experiment.builder('other').datasource(numbers()).add_step(summarize()).build()\n")
    result = ok(cli("run", "experiment.py", "--executor", "serial", "-q", cwd=tmp_path))
    assert "stored in data/demo/v0" in result.stdout
    assert not (tmp_path / "data/other").exists()


# ---------------------------------------------------------------- runs, show, export


def test_runs_lists_finished_and_interrupted_runs(tmp_path: Path, finished_run: Path) -> None:
    shutil.copytree(finished_run / "data", tmp_path / "data")
    shutil.copytree(tmp_path / "data/demo/v0", tmp_path / "data/demo/v1")
    (tmp_path / "data/demo/v1/run.json").unlink()  # as if the run had been killed before the end
    (tmp_path / "data/demo/v2").mkdir()  # an abandoned claim: no plan, not a run

    result = ok(cli("runs", cwd=tmp_path))
    lines = {line.split()[3]: line for line in result.stdout.splitlines() if " demo " in line}
    assert set(lines) == {"v0", "v1"}
    assert "finished" in lines["v0"] and "serial" in lines["v0"] and "18/18" in lines["v0"]
    assert "interrupted" in lines["v1"] and "18/18" in lines["v1"]
    for line in lines.values():
        assert " 6 " in line  # replicates
        assert " 3 " in line  # conditions

    elsewhere = ok(cli("runs", "demo", "--data", str(tmp_path / "data"), cwd=finished_run.parent))
    assert "interrupted" in elsewhere.stdout


def test_show_summarizes_a_run_with_confidence_intervals(finished_run: Path) -> None:
    import pyarrow.parquet as pq
    from scipy import stats

    result = ok(cli("show", "data/demo/v0", cwd=finished_run))
    out = result.stdout
    assert "demo v0" in out and "finished" in out and "seed 11" in out
    for text in ("95% CI of the mean", "baseline", "boost", "small", "total", "first", "by_p_value", "(best)"):
        assert text in out, text

    table = pq.read_table(finished_run / "data/demo/v0/metrics.parquet").to_pylist()
    values = [r["value"] for r in table if r["condition"] == "boost" and r["metric"] == "total"]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values))
    row = next(line for line in out.splitlines() if "boost" in line and "total" in line)
    assert f"[{low:.4g}, {high:.4g}]" in row

    by_name = ok(cli("show", "demo", cwd=finished_run))  # an experiment name: its latest run
    assert "demo v0" in by_name.stdout


def test_show_plot_writes_a_png_with_the_conditions(finished_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    target = tmp_path / "plots" / "demo.png"
    result = ok(cli("show", "demo", "--data", str(finished_run / "data"), "--plot", str(target), cwd=tmp_path))
    assert f"plot written to {target}" in result.stderr
    blob = target.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(blob) > 8_000
    width, height = struct.unpack(">II", blob[16:24])
    with Image.open(target) as image:
        assert image.size == (width, height)
        assert width >= 800 and height >= 400  # two panels side by side (total, first)
        assert image.text["Description"] == "conditions: baseline, boost, small"
        assert image.text["Title"] == "demo v0"


def test_export_parquet_and_csv_read_back_equal_to_the_run(finished_run: Path, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    stored = read_metrics(finished_run / "data/demo/v0")
    run = str(finished_run / "data/demo/v0")
    ok(cli("export", run, "--format", "parquet", "--output", "m.parquet", cwd=tmp_path))
    ok(cli("export", run, "--format", "csv", "--output", "m.csv", cwd=tmp_path))

    long_form = ["condition", "replicate", "metric", "value"]
    parquet = pq.read_table(tmp_path / "m.parquet")
    assert parquet.column_names == [*long_form, "param.delta"]  # one column per treatment key
    delta = {row["condition"]: row["param.delta"] for row in parquet.to_pylist()}
    assert delta == {"baseline": None, "boost": 10.0, "small": 0.1}
    parquet = parquet.select(long_form)
    assert parquet.sort_by([("condition", "ascending"), ("metric", "ascending")]).equals(stored)
    csv = pacsv.read_csv(tmp_path / "m.csv").select(long_form).cast(stored.schema)
    assert csv.sort_by([("condition", "ascending"), ("metric", "ascending")]).equals(stored)

    default = ok(cli("export", "demo", "--data", str(finished_run / "data"), "--format", "csv", cwd=tmp_path))
    assert "wrote 36 row(s) of metrics to demo_v0_metrics.csv" in default.stderr
    assert (tmp_path / "demo_v0_metrics.csv").read_text() == (tmp_path / "m.csv").read_text()


def test_confidence_interval_matches_scipy() -> None:
    from scipy import stats

    from crystallize.cli.tables import summarize

    values = [1.0, 2.5, 2.0, 4.0, 3.5]
    summary = summarize(values)
    low, high = stats.t.interval(0.95, 4, loc=sum(values) / 5, scale=stats.sem(values))
    assert summary.n == 5
    assert summary.std == pytest.approx(stats.tstd(values))
    assert (summary.low, summary.high) == pytest.approx((low, high))
    assert summarize([2.0]).n == 1


def test_entry_points() -> None:
    version = subprocess.run([sys.executable, "-m", "crystallize", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip()
    bare = subprocess.run([sys.executable, "-m", "crystallize"], capture_output=True, text=True)
    assert bare.returncode == 2 and "run" in bare.stderr
    script = shutil.which("crystallize")
    if script is not None:
        assert subprocess.run([script, "--version"], capture_output=True, text=True).stdout == version.stdout


# ---------------------------------------------------------------- Ray


def test_run_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    write_experiment(tmp_path, replicates=4)
    ok(cli("run", "experiment.py", "--executor", "serial", "--seed", "9", "-q", cwd=tmp_path))
    result = ok(cli("run", "experiment.py", "--executor", "ray", "--seed", "9", "-q", cwd=tmp_path, timeout=180))
    assert "stored in data/demo/v1" in result.stdout
    provenance = json.loads((tmp_path / "data/demo/v1/run.json").read_text())["provenance"]
    assert provenance["executor"]["executor"] == "ray"
    assert read_metrics(tmp_path / "data/demo/v1").equals(read_metrics(tmp_path / "data/demo/v0"))


# ---------------------------------------------------------------- YAML experiments and graphs


def _yaml_experiment(folder: Path, name: str, delta: float = 10.0) -> None:
    folder.mkdir(parents=True)
    (folder / "datasources.py").write_text(
        textwrap.dedent(
            """
            from crystallize import data_source

            @data_source
            def numbers(ctx):
                return [1.0, 2.0, 3.0]
            """
        )
    )
    (folder / "steps.py").write_text(
        textwrap.dedent(
            """
            from crystallize import pipeline_step

            @pipeline_step()
            def add_delta(data, ctx, *, delta: float = 0.0):
                return [x + delta for x in data]

            @pipeline_step()
            def summarize(data, ctx):
                return data, {"total": sum(data)}
            """
        )
    )
    (folder / "config.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {name}
            replicates: 3
            datasource: numbers
            steps:
              - add_delta
              - summarize
            treatments:
              boost:
                delta: {delta}
            """
        )
    )


def test_run_a_yaml_experiment_folder(tmp_path: Path) -> None:
    pytest.importorskip("crystallize.config")
    _yaml_experiment(tmp_path / "yaml_demo", "yaml_demo")
    result = ok(cli("run", "yaml_demo", "--executor", "serial", "--seed", "1", cwd=tmp_path))
    assert "stored in data/yaml_demo/v0" in result.stdout
    assert "boost" in result.stdout and "3/3" in result.stdout
    assert (tmp_path / "data/yaml_demo/v0/run.json").exists()


def test_run_a_folder_of_yaml_experiments_as_a_graph(tmp_path: Path) -> None:
    pytest.importorskip("crystallize.graph")
    pytest.importorskip("crystallize.config")
    _yaml_experiment(tmp_path / "graph" / "first", "first")
    (tmp_path / "graph" / "first" / "writer.py").write_text(
        textwrap.dedent(
            """
            import json
            from crystallize import pipeline_step

            @pipeline_step()
            def save(data, ctx):
                ctx.artifacts.add("numbers.json", json.dumps(data))
                return data
            """
        )
    )
    config = tmp_path / "graph" / "first" / "config.yaml"
    config.write_text(
        config.read_text().replace("  - summarize\n", "  - summarize\n  - save\n") + "outputs: [numbers.json]\n"
    )
    _yaml_experiment(tmp_path / "graph" / "second", "second", delta=1.0)
    config = tmp_path / "graph" / "second" / "config.yaml"
    config.write_text(
        config.read_text().replace(
            "datasource: numbers\n",
            "datasource: {artifact: {experiment: first, name: numbers.json, loader: json}}\n",
        )
    )

    result = ok(cli("run", "graph", "--executor", "process", "--replicates", "2", "-q", cwd=tmp_path))
    assert "stored in data/first/v0" in result.stdout
    assert "stored in data/second/v0" in result.stdout
    assert "first \u00b7 boost: 2/2 done, 0 failed" in result.stderr
    assert "second \u00b7 boost: 2/2 done, 0 failed" in result.stderr
    second = read_metrics(tmp_path / "data/second/v0").to_pylist()
    # first's baseline wrote [1, 2, 3] per replicate; second adds 1.0 under boost
    assert sorted({(r["condition"], r["value"]) for r in second}) == [("baseline", 6.0), ("boost", 9.0)]

    again = ok(cli("run", "graph", "--resume", "--replicates", "2", "-q", cwd=tmp_path))
    assert "stored in data/first/v0" in again.stdout and "stored in data/second/v0" in again.stdout


GRAPH = """
import json

from crystallize import Artifact, Experiment, ExperimentGraph, Pipeline, data_source, pipeline_step, treatment

points = Artifact("points.json", loader=lambda path: json.loads(path.read_text()))


@data_source
def nothing(ctx):
    return None


@pipeline_step()
def make(data, ctx):
    points.write(ctx, json.dumps([ctx["replicate"], 2 * ctx["replicate"]]))
    return data, {"made": 1}


@pipeline_step()
def total(data, ctx, *, scale: float = 1.0):
    return data, {"total": scale * sum(data)}


producer = Experiment(
    datasource=nothing(), pipeline=Pipeline([make()]), outputs=[points], replicates=3, name="producer"
)
consumer = Experiment(
    datasource=points,
    pipeline=Pipeline([total()]),
    treatments=[treatment("double", {"scale": 2.0})],
    replicates=3,
    name="consumer",
)
graph = ExperimentGraph.from_experiments([producer, consumer])
"""


def test_run_a_python_file_with_a_graph(tmp_path: Path) -> None:
    pytest.importorskip("crystallize.graph")
    (tmp_path / "pipeline.py").write_text(GRAPH)
    result = ok(cli("run", "pipeline.py", "--executor", "serial", "--seed", "4", cwd=tmp_path))
    assert "stored in data/producer/v0" in result.stdout
    assert "stored in data/consumer/v0" in result.stdout
    assert result.stdout.index("producer v0") < result.stdout.index("consumer v0")
    consumer = read_metrics(tmp_path / "data/consumer/v0").to_pylist()
    assert sorted(r["value"] for r in consumer if r["condition"] == "double") == [0.0, 6.0, 12.0]
    assert json.loads((tmp_path / "data/producer/v0/run.json").read_text())["provenance"]["root_seed"] == 4
