"""Stored results read as Crystallize 0.27 read them: ``load_metrics``/``load_all_metrics`` and the files
0.27 left in a version folder (``metadata.json``, ``<condition>/results.json``,
``<condition>/.crystallize_complete``, ``_manifest.json``).

The files are derived from our records after ``run.json`` and never read back: the loaders read
the records, so an edited ``results.json`` changes nothing for us. Local folder and S3 (moto).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3_server import moto_endpoint  # noqa: F401 - the S3 side of store_root

from crystallize import (
    ArtifactPlugin,
    BaseOptimizer,
    Experiment,
    Objective,
    Pipeline,
    SerialExecution,
    Treatment,
    ValidationError,
    data_source,
    load_run,
    pipeline_step,
)
from crystallize.plugins import artifacts as artifacts_module
from crystallize.plugins import load_all_metrics, load_metrics, load_metrics_table
from crystallize.store import Store, layout, legacy_files
from crystallize.store.claims import CLAIMS, HOLDERS
from crystallize.store.lease import LEASE
from crystallize.store.records import claim_version

NAME = "compat"


@data_source
def source(ctx: Any) -> int:
    return ctx["replicate"]


@pipeline_step
def measure(data: int, ctx: Any, delta: int = 0, fail_at: int = -1) -> int:
    if data == fail_at:
        raise RuntimeError("this replicate fails")
    ctx.metrics.add("count", data + delta)
    ctx.metrics.add("score", np.float64(data) / 2)
    ctx.metrics.add("shape", (data, delta))
    ctx.metrics.add("vector", np.arange(2) + delta)
    ctx.artifacts.add("note.txt", f"{ctx['condition']} {data}".encode())
    return data


def experiment(root: str, treatments: list[Treatment], *, replicates: int = 3, versioned: bool = True) -> Experiment:
    return Experiment(
        source(),
        Pipeline([measure()]),
        plugins=[SerialExecution(progress=False), ArtifactPlugin(root_dir=root, versioned=versioned)],
        name=NAME,
        replicates=replicates,
        treatments=treatments,
    )


def read_json(store: Store, relative: str) -> Any:
    return json.loads(store.read_bytes(relative))


def expected_metrics(replicates: list[int], delta: int) -> dict[str, list[Any]]:
    """What results.json holds for those replicates: JSON values (tuples and arrays as lists)."""
    return {
        "count": [r + delta for r in replicates],
        "score": [r / 2 for r in replicates],
        "shape": [[r, delta] for r in replicates],
        "vector": [[delta, 1 + delta] for _ in replicates],
    }


# ------------------------------------------------------------------ the files 0.27 left


def test_a_finished_run_writes_the_027_files_from_its_records(store_root: str) -> None:
    treatments = [Treatment("hot", {"delta": 10}), Treatment("broken", {"delta": 1, "fail_at": 1})]
    result = experiment(store_root, treatments).run()
    store = Store(store_root)
    version = result.provenance["version"]

    metadata = read_json(store, layout.legacy_file(NAME, version, "metadata.json"))
    assert metadata == {"replicates": 3, "id": result.provenance["pipeline_fingerprint"], "name": NAME}
    assert read_json(store, layout.legacy_file(NAME, version, "_manifest.json")) == {"note.txt": "measure"}
    results = {
        condition: read_json(store, layout.legacy_condition_file(NAME, version, condition, "results.json"))
        for condition in ("baseline", "hot", "broken")
    }
    assert results == {
        "baseline": {"metrics": expected_metrics([0, 1, 2], 0)},
        "hot": {"metrics": expected_metrics([0, 1, 2], 10)},
        "broken": {"metrics": expected_metrics([0, 2], 1)},  # the failed replicate has no values, as in 0.27
    }
    for condition in results:
        marker = layout.legacy_condition_file(NAME, version, condition, ".crystallize_complete")
        assert store.read_bytes(marker) == b""
    # The manifest's step folder is where the artifact really is, for every condition.
    for condition in results:
        assert store.read_bytes(f"{layout.version_dir(NAME, version)}/replicate_0/{condition}/measure/note.txt") == (
            f"{condition} 0".encode()
        )


def test_the_027_files_come_after_the_records_and_a_store_refusing_them_keeps_the_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bool] = []

    def refuse(store: Store, experiment: str, version: int, **_: Any) -> None:
        seen.append(store.exists(layout.run_file(experiment, version, layout.RUN_RECORD)))
        raise PermissionError("read-only bucket policy")

    monkeypatch.setattr(legacy_files, "write", refuse)
    with caplog.at_level(logging.WARNING, logger="crystallize.store.records"):
        result = experiment("data", [Treatment("hot", {"delta": 10})]).run()
    assert seen == [True], "run.json is written before the 0.27 files"
    assert any("could not be written" in r.getMessage() and "PermissionError" in r.getMessage() for r in caplog.records)
    assert not Path("data", NAME, "v0", "baseline").exists()
    assert load_run("data/compat/v0").provenance["finished"] is True
    assert load_metrics("data/compat") == (0, expected_metrics([0, 1, 2], 0), {"hot": expected_metrics([0, 1, 2], 10)})
    assert result.metrics.baseline.metrics["count"] == [0, 1, 2]


def test_an_unversioned_rerun_leaves_no_stale_027_files(store_root: str) -> None:
    store = Store(store_root)
    treatments = [Treatment("hot", {"delta": 10}), Treatment("gone", {"delta": 5})]
    experiment(store_root, treatments, versioned=False).run()
    gone = layout.legacy_condition_file(NAME, 0, "gone", ".crystallize_complete")
    assert store.exists(gone)
    experiment(store_root, [Treatment("hot", {"delta": 20})], versioned=False).run()
    assert "gone" not in store.list_dir(layout.version_dir(NAME, 0)), "a condition not rerun is not left complete"
    hot = layout.legacy_condition_file(NAME, 0, "hot", "results.json")
    assert read_json(store, hot) == {"metrics": expected_metrics([0, 1, 2], 20)}
    assert store.exists(layout.legacy_condition_file(NAME, 0, "hot", ".crystallize_complete"))
    assert store.exists(f"{layout.version_dir(NAME, 0)}/replicate_0/gone/measure/note.txt"), "artifacts stay"
    assert load_metrics(f"{store_root}/{NAME}")[2] == {"hot": expected_metrics([0, 1, 2], 20)}


def test_metric_values_are_the_json_view_in_the_files_and_the_loader_alike() -> None:
    result = experiment("data", [Treatment("hot", {"delta": 10})]).run()
    on_disk = json.loads(Path("data", NAME, "v0", "hot", "results.json").read_text())["metrics"]
    _, baseline, treatments = load_metrics(Path("data") / NAME)
    assert treatments["hot"] == on_disk
    assert [type(v) for v in baseline["score"]] == [float, float, float]  # NumPy scalars as plain floats
    assert result.metrics.treatments["hot"].metrics["shape"][0] == (0, 10), "the Result keeps the exact values"


# ------------------------------------------------------------------ load_metrics / load_all_metrics


def test_load_metrics_and_load_all_metrics_have_027_shapes(store_root: str) -> None:
    where = f"{store_root}/{NAME}"
    assert load_metrics(where) == (-1, {}, {})
    assert load_all_metrics(where) == (-1, {}, {})
    experiment(store_root, [Treatment("zeta", {"delta": 1}), Treatment("alpha", {"delta": 2})]).run()
    experiment(store_root, [Treatment("zeta", {"delta": 3}), Treatment("beta", {"delta": 4})]).run()

    version, baseline, treatments = load_metrics(where)
    assert version == 1
    assert baseline == expected_metrics([0, 1, 2], 0)
    assert list(treatments) == ["beta", "zeta"]  # sorted by name, as 0.27's folder walk gives them
    assert treatments["zeta"] == expected_metrics([0, 1, 2], 3)
    assert load_metrics(where, version=0)[2] == {
        "alpha": expected_metrics([0, 1, 2], 2),
        "zeta": expected_metrics([0, 1, 2], 1),
    }
    assert load_metrics(f"{where}/v0") == load_metrics(where, 0), "the folder may name the version"

    latest, baseline_all, merged = load_all_metrics(where)
    assert (latest, baseline_all) == (1, baseline)
    assert list(merged) == ["beta", "zeta", "alpha"]  # newest version first, then by name
    assert merged == {
        "beta": (1, expected_metrics([0, 1, 2], 4)),
        "zeta": (1, expected_metrics([0, 1, 2], 3)),
        "alpha": (0, expected_metrics([0, 1, 2], 2)),
    }
    assert load_all_metrics(where, version=0) == (
        0,
        baseline,
        {"alpha": (0, expected_metrics([0, 1, 2], 2)), "zeta": (0, expected_metrics([0, 1, 2], 1))},
    )
    assert load_metrics(where, version=7) == (7, {}, {}), "a version with no run has empty metrics"

    table_version, table = load_metrics_table(where)  # our Arrow view, under its new name
    assert table_version == 1 and table.column_names == ["condition", "replicate", "metric", "value"]


def test_versions_without_a_finished_run_give_no_metrics(store_root: str) -> None:
    experiment(store_root, [Treatment("hot", {"delta": 10})]).run()
    store = Store(store_root)
    abandoned = claim_version(store, NAME)  # a run that claimed its folder and died
    assert abandoned == 1
    version, _, treatments = load_metrics(f"{store_root}/{NAME}")
    assert version == 0 and treatments == {"hot": expected_metrics([0, 1, 2], 10)}
    assert load_metrics(f"{store_root}/{NAME}", version=abandoned) == (1, {}, {})
    assert load_all_metrics(f"{store_root}/{NAME}", version=abandoned)[2] == {
        "hot": (0, expected_metrics([0, 1, 2], 10))
    }


def test_loaders_read_the_records_never_the_027_files() -> None:
    experiment("data", [Treatment("hot", {"delta": 10})]).run()
    version_dir = Path("data", NAME, "v0")
    (version_dir / "hot" / "results.json").write_text(json.dumps({"metrics": {"count": [999]}}))
    (version_dir / "baseline" / "results.json").unlink()
    (version_dir / "metadata.json").write_text(json.dumps({"replicates": 99}))
    assert load_metrics("data/compat") == (0, expected_metrics([0, 1, 2], 0), {"hot": expected_metrics([0, 1, 2], 10)})
    assert load_all_metrics("data/compat")[2] == {"hot": (0, expected_metrics([0, 1, 2], 10))}
    loaded = load_run("data/compat/v0")
    assert loaded.metrics.treatments["hot"].metrics["count"] == [10, 11, 12]
    assert loaded.provenance["replicates"] == 3
    assert "damaged" not in loaded.provenance, "the 0.27 files are no part of the record"


def test_a_version_is_not_a_number() -> None:
    with pytest.raises(ValidationError, match="version must be a version number"):
        load_metrics("data/compat", version="latest")  # type: ignore[arg-type]
    assert load_metrics("data/compat", version=np.int64(0)) == (0, {}, {})


def test_the_loaders_are_where_027_has_them() -> None:
    import crystallize.plugins

    assert crystallize.plugins.load_metrics is artifacts_module.load_metrics is load_metrics
    assert crystallize.plugins.load_all_metrics is artifacts_module.load_all_metrics
    assert "load_metrics_table" in crystallize.plugins.__all__


# ------------------------------------------------------------------ names that would collide


@pytest.mark.parametrize(
    "name", ["outcomes", "claims", "holders", "replicate_0", "replicate_12", "Outcomes", "run.json", "metadata.json"]
)
def test_a_treatment_named_like_the_version_folders_own_entries_is_refused(name: str) -> None:
    exp = experiment("data", [Treatment(name, {"delta": 1})])
    with pytest.raises(ValidationError, match=rf"'{name}' cannot name a condition.*rename it") as caught:
        exp.validate()
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValidationError, match="cannot name a condition"):
        experiment("data", []).run(treatments=[Treatment(name, {"delta": 1})])
    assert not Path("data").exists(), "refused before anything is stored"


class _AsksFor(BaseOptimizer):
    """Proposes one treatment of a given name, once."""

    def __init__(self, name: str) -> None:
        super().__init__(Objective("count"))
        self.name = name

    def ask(self) -> list[Treatment]:
        return [Treatment(self.name, {"delta": 1})]

    def tell(self, objective_values: Any) -> None:
        pass

    def get_best_treatment(self) -> Treatment:
        return Treatment(self.name, {"delta": 1})


def test_an_optimizer_asking_for_a_colliding_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="'holders' cannot name a condition"):
        experiment("data", []).optimize(_AsksFor("holders"), num_trials=1)
    exp = experiment("data", [])
    exp.optimize(_AsksFor("fine"), num_trials=1)
    version_dir = Path("data", NAME, f"v{exp.last_optimization.provenance['version']}")
    assert json.loads((version_dir / "fine" / "results.json").read_text())["metrics"]["count"] == [1]
    assert not (version_dir / "baseline").exists(), "optimize() runs no baseline, so it has no folder"


def test_the_reserved_names_follow_the_modules_that_write_them() -> None:
    assert {LEASE, CLAIMS, HOLDERS, layout.PLAN, layout.RUN_RECORD, layout.METRICS, layout.OUTCOMES} <= set(
        layout.VERSION_ENTRIES
    )
    assert layout.condition_name_problem(".claims") is not None  # object stores' claim markers
    assert layout.condition_name_problem("replicates") is None
    assert layout.condition_name_problem("results.json") is None  # only inside a condition's folder


# ------------------------------------------------------------------ 0.27 itself reads our folders

REFERENCE_PYTHON = os.environ.get("CRYSTALLIZE_027_PYTHON")


@pytest.mark.skipif(not REFERENCE_PYTHON, reason="set CRYSTALLIZE_027_PYTHON to a Python with crystallize-ml 0.27")
def test_crystallize_027_reads_our_version_folders_as_its_own() -> None:
    experiment("data", [Treatment("zeta", {"delta": 1}), Treatment("alpha", {"delta": 2})]).run()
    experiment("data", [Treatment("zeta", {"delta": 3})]).run()
    script = (
        "import json, sys; from pathlib import Path; from crystallize.plugins import load_metrics, load_all_metrics; "
        "p = Path(sys.argv[1]); print(json.dumps([load_metrics(p), load_metrics(p, 0), load_all_metrics(p)]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(REFERENCE_PYTHON), "-c", script, str(Path("data", NAME))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    theirs = json.loads(done.stdout)
    ours = json.loads(
        json.dumps([load_metrics("data/compat"), load_metrics("data/compat", 0), load_all_metrics("data/compat")])
    )
    assert theirs == ours
