"""``crystallize export RUN --mlflow URI``, read back through MLflow's own client from a real
SQLite tracking store (no tracking server: the store is a file under tmp_path).

MLflow's telemetry is switched off before MLflow is first imported (it starts at import);
one test watches every socket the export opens and finds none beyond this machine.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as scipy_stats

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # read once, by `import mlflow`
os.environ["DO_NOT_TRACK"] = "true"

from test_cli import cli, ok

from crystallize.cli import mlflow_export  # after the telemetry switches: it imports no MLflow itself
from crystallize.results import Result

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # MLflow's

REPLICATES = 3
NO_MLFLOW = "MLflow is not installed (pip install 'crystallize-ray[mlflow]', which the test extra includes)"

EXPERIMENT = """
from crystallize import Experiment, data_source, hypothesis, pipeline_step, treatment, welch_t_test
from crystallize.plugins import ArtifactPlugin


@data_source
def numbers(ctx):
    return [float(x) for x in ctx.rng.normal(size=6)]


@pipeline_step()
def add_delta(data, ctx, *, delta: float = 0.0, label: str = "none"):
    shifted = [x + delta for x in data]
    ctx.artifacts.add("values.txt", "\\n".join(f"{x:.6f}" for x in shifted).encode())
    return shifted


@pipeline_step()
def summarize(data, ctx):
    return data, {"total": sum(data), "first": data[0], "kind": "text"}


@hypothesis(verifier=welch_t_test(), metrics="total")
def by_p(result):
    return result["p_value"]


experiment = (
    Experiment.builder("mlf")
    .datasource(numbers())
    .add_step(add_delta())
    .add_step(summarize())
    .plugins([ArtifactPlugin(root_dir="data")])
    .treatments([
        treatment("boost", {"delta": 10.0, "label": "big"}),
        treatment("small", {"delta": 0.1, "label": "tiny"}),
    ])
    .hypotheses([by_p])
    .replicates(@REPLICATES@)
    .build()
)
"""


@pytest.fixture(scope="module")
def mlflow() -> Any:
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    pytest.importorskip("sqlalchemy", reason=f"{NO_MLFLOW}; its sqlite:// store needs sqlalchemy")
    pytest.importorskip("alembic", reason=f"{NO_MLFLOW}; its sqlite:// store needs alembic")
    import mlflow as module

    return module


@pytest.fixture(scope="module")
def _empty_store(mlflow: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh SQLite tracking store, made once (MLflow's schema migrations take seconds) and copied per test."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_store") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def uri(_empty_store: Path, tmp_path: Path) -> str:
    """This test's own tracking store, ``sqlite:///<tmp_path>/mlflow.db``."""
    shutil.copyfile(_empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    done = subprocess.run([*command, *args], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory, _session_config_home: Path) -> tuple[Path, str]:
    """A finished serial run (2 treatments, an artifact per replicate) of code in a git repository."""
    folder = tmp_path_factory.mktemp("mlflow_run")
    (folder / "experiment.py").write_text(EXPERIMENT.replace("@REPLICATES@", str(REPLICATES)))
    _git(folder, "init", "-q")
    _git(folder, "add", "experiment.py")
    _git(folder, "commit", "-q", "-m", "experiment")
    env = {"XDG_CONFIG_HOME": str(_session_config_home)}
    ok(cli("run", "experiment.py", "--executor", "serial", "--seed", "7", cwd=folder, env=env))
    return folder / "data/mlf/v0", _git(folder, "rev-parse", "HEAD")


def _load(run: Path) -> Result:
    from crystallize.runs import load_run

    return load_run(str(run))


def _runs(client: Any, experiment: str) -> dict[str, Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment '{experiment}'"
    return {run.info.run_name: run for run in client.search_runs([found.experiment_id])}


def _mlflow_env() -> dict[str, str]:
    return {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# ---------------------------------------------------------------- through the command


def test_export_logs_each_condition_as_an_mlflow_run_read_back_by_mlflow(
    mlflow: Any, stored_run: tuple[Path, str], tmp_path: Path, uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    run, commit = stored_run
    result = _load(run)
    done = ok(cli("export", str(run), "--mlflow", uri, cwd=tmp_path, env=_mlflow_env()))
    assert "logged 3 MLflow run(s)" in done.stderr and "3 created, 0 replaced, 0 unchanged" in done.stderr, done.stderr
    assert not list(tmp_path.glob("*_metrics.*")), "--mlflow alone writes no metrics file"

    client = MlflowClient(tracking_uri=uri)
    runs = _runs(client, "mlf")
    assert sorted(runs) == ["baseline", "boost", "small"]

    boost = runs["boost"]
    assert boost.info.status == "FINISHED"
    assert boost.data.params == {
        "delta": "10.0",
        "label": "big",
        "crystallize.replicates": str(REPLICATES),
        "crystallize.root_seed": "7",
        "crystallize.seed_stream": "main",
    }
    assert "delta" not in runs["baseline"].data.params  # the baseline has no treatment parameters

    for condition, tm in result.metrics.conditions():
        mlrun = runs[condition]
        for name in ("total", "first"):
            history = sorted(client.get_metric_history(mlrun.info.run_id, name), key=lambda m: m.step)
            assert [m.step for m in history] == list(range(REPLICATES))
            assert [m.value for m in history] == pytest.approx(tm.metrics[name])
            values = [float(v) for v in tm.metrics[name]]
            assert mlrun.data.metrics[f"{name}/mean"] == pytest.approx(statistics.fmean(values))
            assert mlrun.data.metrics[f"{name}/std"] == pytest.approx(statistics.stdev(values))
            low, high = scipy_stats.t.interval(0.95, len(values) - 1, statistics.fmean(values), scipy_stats.sem(values))
            assert (mlrun.data.metrics[f"{name}/ci95_low"], mlrun.data.metrics[f"{name}/ci95_high"]) == pytest.approx(
                (low, high)
            )
            assert mlrun.data.metrics[f"{name}/n"] == REPLICATES
        assert "kind" not in mlrun.data.metrics  # text metrics are no MLflow metrics
        tags = mlrun.data.tags
        assert tags["crystallize.experiment"] == "mlf"
        assert tags["crystallize.version"] == "0"
        assert tags["crystallize.condition"] == condition
        assert tags["crystallize.executor"] == "serial"
        assert tags["crystallize.crystallize_version"] == result.provenance["crystallize_version"]
        assert tags["crystallize.git_commit"] == commit == tags["mlflow.source.git.commit"]  # the experiment's repo
        assert tags["crystallize.git_dirty"] == str(result.provenance["git"]["dirty"]).lower()

        listed = {f.path for f in client.list_artifacts(mlrun.info.run_id)}
        assert listed == {"crystallize", *(f"replicate_{i}" for i in range(REPLICATES))}
        for i in range(REPLICATES):
            files = [f.path for f in client.list_artifacts(mlrun.info.run_id, f"replicate_{i}/add_delta")]
            assert files == [f"replicate_{i}/add_delta/values.txt"]
        copied = Path(client.download_artifacts(mlrun.info.run_id, "replicate_1/add_delta/values.txt", str(tmp_path)))
        assert copied.read_bytes() == (run / f"replicate_1/{condition}/add_delta/values.txt").read_bytes()

    hypothesis = result.get_hypothesis("by_p")
    assert hypothesis is not None
    for treatment in ("boost", "small"):
        metrics = runs[treatment].data.metrics
        stored = hypothesis.results[treatment]
        for key in ("p_value", "p_value_adjusted", "effect_size", "difference", "ci_low", "ci_high", "n_treatment"):
            assert metrics[f"by_p/{key}"] == pytest.approx(stored[key]), key
        assert metrics["by_p/significant"] == float(stored["significant"])
        assert metrics["by_p/significant_adjusted"] == float(stored["significant_adjusted"])
        assert runs[treatment].data.tags["crystallize.hypothesis.by_p.test"] == "welch_t"
    assert {metrics_name for metrics_name in runs["baseline"].data.metrics if metrics_name.startswith("by_p/")} == set()
    ranks = {t: runs[t].data.metrics["by_p/rank"] for t in ("boost", "small")}
    assert sorted(ranks.values()) == [1.0, 2.0]
    assert ranks[hypothesis.ranking["best"]] == 1.0

    again = ok(cli("export", str(run), "--mlflow", uri, cwd=tmp_path, env=_mlflow_env()))
    assert "0 created, 0 replaced, 3 unchanged" in again.stderr, again.stderr
    assert {name: r.info.run_id for name, r in _runs(client, "mlf").items()} == {
        name: r.info.run_id for name, r in runs.items()
    }


def test_mlflow_experiment_option_and_usage_errors(
    mlflow: Any, stored_run: tuple[Path, str], tmp_path: Path, uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from crystallize.cli.main import main

    run, _ = stored_run
    args = ["export", str(run), "--mlflow", uri, "--mlflow-experiment", "study", "--format", "csv", "-o", "m.csv"]
    assert main(args) == 0
    stderr = capsys.readouterr().err
    assert "experiment 'study'" in stderr and "wrote 27 row(s) of metrics to m.csv" in stderr, stderr
    assert (tmp_path / "m.csv").is_file()
    assert sorted(_runs(MlflowClient(tracking_uri=uri), "study")) == ["baseline", "boost", "small"]

    assert main(["export", str(run), "--mlflow-experiment", "study"]) == 2
    assert "--mlflow-experiment goes with --mlflow URI" in capsys.readouterr().err


# ---------------------------------------------------------------- in process


def test_a_changed_run_replaces_its_mlflow_runs_and_never_duplicates(
    mlflow: Any, stored_run: tuple[Path, str], tmp_path: Path, uri: str
) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    run, _ = stored_run
    first = mlflow_export.export_to_mlflow(_load(run), uri, location=str(run))
    before = {r.condition: r.run_id for r in first.runs}

    changed = _load(run)  # as if a resumed run had gained a replicate in 'small'
    changed.metrics.treatments["small"].metrics["total"].append(1.5)
    changed.metrics.treatments["small"].replicates["total"].append(REPLICATES)
    second = mlflow_export.export_to_mlflow(changed, uri, location=str(run))
    assert {r.condition: r.action for r in second.runs} == {
        "baseline": "unchanged",
        "boost": "unchanged",
        "small": "replaced",
    }

    client = MlflowClient(tracking_uri=uri)
    runs = _runs(client, "mlf")
    assert sorted(runs) == ["baseline", "boost", "small"]  # active runs: one per condition
    assert runs["baseline"].info.run_id == before["baseline"]
    assert runs["small"].info.run_id != before["small"]
    assert len(client.get_metric_history(runs["small"].info.run_id, "total")) == REPLICATES + 1
    experiment_id = client.get_experiment_by_name("mlf").experiment_id
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [before["small"]]  # soft-deleted: restorable

    other = mlflow_export.export_to_mlflow(_load(run), uri, location="/elsewhere/mlf/v0")
    assert {r.action for r in other.runs} == {"created"}  # another stored run with the same name and version


def test_many_values_go_in_batches_and_every_one_arrives(mlflow: Any, uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from crystallize.results import ExperimentMetrics, TreatmentMetrics

    count = 2500  # over MLflow's 1000 metrics per log_batch call
    values = [math.sin(i) for i in range(count)]
    metrics = ExperimentMetrics(TreatmentMetrics({"score": values}, {"score": list(range(count))}), {}, [])
    result = Result(metrics, provenance={"experiment": "big", "version": 0, "replicates": count})
    calls: list[int] = []
    original = MlflowClient.log_batch

    def counting(self: Any, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kwargs: Any) -> Any:
        calls.append(len(metrics))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, "log_batch", counting)
        export = mlflow_export.export_to_mlflow(result, uri)
    assert max(calls) == 1000 and sum(calls) == count + 5  # values + mean, std, ci95_low, ci95_high, n
    run_id = export.runs[0].run_id
    history = sorted(MlflowClient(tracking_uri=uri).get_metric_history(run_id, "score"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx(values)


def test_old_repr_parameters_and_typed_ones_log_the_same_text(mlflow: Any) -> None:
    typed = {"delta": -2.0, "label": "big", "sizes": [1, 2], "flag": True, "odd": {"repr": "<X>", "type": "m.X"}}
    old = {"delta": "np.float64(-2.0)", "label": "'big'", "sizes": "[1, 2]", "flag": "True", "odd": "<X>"}
    for provenance in (
        {"treatments": {"t": typed}, "replicates": 2, "versions": {}},  # this release: typed values
        {"treatments": {"t": old}, "replicates": 2},  # before typed values: reprs
    ):
        assert mlflow_export._params(provenance, "t") == {
            "delta": "-2.0",
            "label": "big",
            "sizes": "[1, 2]",
            "flag": "True",
            "odd": "<X>",
            "crystallize.replicates": "2",
            "crystallize.seed_stream": "main",
        }


def test_a_remote_store_logs_where_the_artifacts_are_instead_of_copying(
    mlflow: Any, stored_run: tuple[Path, str], tmp_path: Path, uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    run, _ = stored_run
    result = _load(run)
    local = str(run)
    result.artifact_entries = {
        condition: [dataclasses.replace(e, path=e.path.replace(local, "s3://bucket/data/mlf/v0")) for e in entries]
        for condition, entries in result.artifact_entries.items()
    }
    export = mlflow_export.export_to_mlflow(result, uri, location="s3://bucket/data/mlf/v0")
    assert sum(r.artifacts for r in export.runs) == 0
    client = MlflowClient(tracking_uri=uri)
    boost = _runs(client, "mlf")["boost"]
    assert boost.data.tags["crystallize.artifacts_uri"] == "s3://bucket/data/mlf/v0"
    assert [f.path for f in client.list_artifacts(boost.info.run_id)] == ["crystallize"]
    manifest = json.loads(Path(client.download_artifacts(boost.info.run_id, "crystallize/artifacts.json")).read_text())
    assert {e["stored_at"] for e in manifest["artifacts"]} == {
        f"s3://bucket/data/mlf/v0/replicate_{i}/boost/add_delta/values.txt" for i in range(REPLICATES)
    }


@pytest.fixture
def sockets() -> Iterator[list[Any]]:
    """Every address a socket of this process connects to (or looks up) while the fixture is active."""
    seen: list[Any] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "socket.connect":
            seen.append(args[1])
        elif active[0] and event == "socket.getaddrinfo":
            seen.append((args[0], args[1]))

    sys.addaudithook(hook)  # audit hooks cannot be removed: this one goes quiet after the test
    try:
        yield seen
    finally:
        active[0] = False


def test_the_export_talks_to_nothing_beyond_this_machine(
    mlflow: Any, stored_run: tuple[Path, str], tmp_path: Path, uri: str, sockets: list[Any]
) -> None:
    from mlflow.telemetry.client import get_telemetry_client

    run, _ = stored_run
    mlflow_export.export_to_mlflow(_load(run), uri, location=str(run))
    assert get_telemetry_client() is None, "MLflow telemetry is off in the tests"
    for address in sockets:
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            host = address[0]
            if host != "localhost":
                assert ipaddress.ip_address(host).is_loopback, f"the export connected to {address}"


def _empty_result() -> Result:
    from crystallize.results import ExperimentMetrics, TreatmentMetrics

    return Result(ExperimentMetrics(TreatmentMetrics({}), {}, []), provenance={"experiment": "none"})


def test_without_mlflow_the_error_names_the_extra(
    stored_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crystallize.cli.main import main

    for module in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, module, None)  # `import mlflow` raises ImportError
    with pytest.raises(mlflow_export.MlflowNotInstalledError, match=r"crystallize-ray\[mlflow\]") as raised:
        mlflow_export.export_to_mlflow(_empty_result(), "sqlite:///unused.db")
    assert isinstance(raised.value, ImportError)

    run, _ = stored_run
    assert main(["export", str(run), "--mlflow", "sqlite:///unused.db"]) == 2  # a usage error, no traceback
    stderr = capsys.readouterr().err
    assert "crystallize export: error: --mlflow needs MLflow, which is not installed" in stderr, stderr
    assert "crystallize-ray[mlflow]" in stderr and "Traceback" not in stderr


def test_the_docs_page_python_block_runs_and_the_readme_links_it(
    mlflow: Any, stored_run: tuple[Path, str], uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "mlflow.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 1
    run, _ = stored_run
    code = blocks[0].replace("data/demo/v0", str(run)).replace("sqlite:///mlflow.db", uri)
    exec(compile(code, "docs/mlflow.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["baseline", "boost", "small"]
    assert {line.split()[2] for line in printed} == {"created"}
    assert "(docs/mlflow.md)" in (root / "README.md").read_text(encoding="utf-8")
