"""``RunRepository`` on every backend (a local folder and S3 on moto): finding, opening, listing, resetting.

Runs are laid down record by record (plan, outcome parts, metrics, run record) so each
state a version can be in is exact: an abandoned claim (no plan), an interrupted run
(a plan and outcomes, no record) and a finished run. One test stores a real run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from s3_server import moto_endpoint  # noqa: F401 - the S3 side of the store_root fixture

from crystallize import ArtifactPlugin, Experiment, Pipeline, SerialExecution, data_source, pipeline_step
from crystallize.engine.plan import ReplicateOutcome
from crystallize.errors import ValidationError
from crystallize.store import RunLocation, RunRepository, Store, layout, parse_location
from crystallize.store.records import RunRecorder, dumps_json

# ------------------------------------------------------------------ building blocks


def claim(store: Store, experiment: str) -> int:
    """A version claimed and then abandoned (the run died before it wrote its plan)."""
    return RunRepository(store).claim(experiment)


def interrupted(store: Store, experiment: str, replicates: int = 2) -> int:
    """A claimed version with a plan and one outcome per replicate, but no run record."""
    version = claim(store, experiment)
    recorder = RunRecorder(store, experiment, version)
    recorder.write_plan({"mode": "run", "replicates": replicates, "conditions": ["baseline"]})
    for replicate in range(replicates):
        recorder.record(ReplicateOutcome("baseline", replicate, replicate, {"value": [float(replicate)]}))
    recorder.flush()
    return version


def finished(store: Store, experiment: str, replicates: int = 2) -> int:
    """An interrupted version completed with metrics and ``run.json`` (written last, as a run does)."""
    version = interrupted(store, experiment, replicates)
    store.write_bytes(layout.run_file(experiment, version, layout.METRICS), b"not read here")
    record = {"experiment": experiment, "version": version, "provenance": {}, "errors": {}}
    store.write_bytes(layout.run_file(experiment, version, layout.RUN_RECORD), dumps_json(record))
    return version


def files(store: Store, experiment: str) -> set[str]:
    return set(store.walk_files(layout.experiment_dir(experiment)))


# ------------------------------------------------------------------ finding


def test_latest_with_a_plan_skips_an_abandoned_claim(store_root: str) -> None:
    store = Store(store_root)
    repository = RunRepository(store)
    assert finished(store, "exp") == 0
    assert claim(store, "exp") == 1

    assert repository.versions("exp") == [0, 1]
    assert repository.latest("exp", require="claim") == 1
    assert repository.latest("exp", require="plan") == 0
    assert repository.latest("exp", require="record") == 0
    assert repository.open("exp", 1) is None, "a claim without a plan is not a run"


def test_latest_with_a_record_skips_an_unfinished_run(store_root: str) -> None:
    store = Store(store_root)
    repository = RunRepository(store)
    assert finished(store, "exp") == 0
    assert interrupted(store, "exp") == 1
    assert claim(store, "exp") == 2

    assert repository.latest("exp", require="record") == 0
    assert repository.latest("exp", require="plan") == 1
    run = repository.open("exp", 1)
    assert run is not None and not run.finished and run.record is None
    assert sorted(run.outcomes) == [("baseline", 0), ("baseline", 1)]
    done = repository.open("exp", 0)
    assert done is not None and done.finished and done.record is not None
    assert done.record["version"] == 0


def test_no_versions_means_no_latest(store_root: str) -> None:
    store = Store(store_root)
    repository = RunRepository(store)
    assert repository.versions("nothing") == []
    for require in ("claim", "plan", "record"):
        assert repository.latest("nothing", require=require) is None  # type: ignore[arg-type]
    claim(store, "only-claimed")
    assert repository.latest("only-claimed", require="plan") is None
    with pytest.raises(ValueError, match="require"):
        repository.latest("nothing", require="finished")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        repository.versions("../escape")


# ------------------------------------------------------------------ listing


def test_listing_several_experiments(store_root: str) -> None:
    store = Store(store_root)
    repository = RunRepository(store)
    finished(store, "alpha")
    claim(store, "alpha")  # abandoned: left out of the runs
    interrupted(store, "alpha")
    interrupted(store, "beta", replicates=3)
    claim(store, "gamma")  # claimed only: an experiment, but without runs
    store.write_bytes("notes.txt", b"not an experiment")
    store.write_bytes("scratch/readme.txt", b"a folder without versions")

    assert repository.experiments() == ["alpha", "beta", "gamma"]
    runs = repository.runs()
    assert [(r.experiment, r.version, r.finished) for r in runs] == [
        ("alpha", 0, True),
        ("alpha", 2, False),
        ("beta", 0, False),
    ]
    assert len(runs[2].outcomes) == 3
    assert [(r.experiment, r.version) for r in repository.runs("beta")] == [("beta", 0)]
    assert repository.runs("gamma") == []
    assert repository.runs("missing") == []


# ------------------------------------------------------------------ resetting


def test_reset_removes_exactly_the_run_files(store_root: str) -> None:
    store = Store(store_root)
    repository = RunRepository(store)
    version = finished(store, "exp", replicates=3)
    extra = RunRecorder(store, "exp", version)
    extra.record(ReplicateOutcome("baseline", 9, 9, {}))
    extra.flush()  # a second outcome part
    artifact = layout.artifact("exp", version, 0, "baseline", "step", "out.txt")
    store.write_bytes(artifact, b"artifact")
    other = finished(store, "exp")
    before = files(store, "exp")
    run_files = {
        layout.run_file("exp", version, layout.RUN_RECORD),
        layout.run_file("exp", version, layout.METRICS),
        *(f for f in before if f.startswith(f"{layout.run_file('exp', version, layout.OUTCOMES)}/")),
    }
    assert len(run_files) >= 3

    repository.reset("exp", version)

    assert files(store, "exp") == before - run_files
    assert store.exists(layout.run_file("exp", version, layout.PLAN)), "the plan is overwritten, not removed"
    assert store.read_bytes(artifact) == b"artifact"
    assert repository.outcomes("exp", version) == {}
    assert repository.latest("exp", require="record") == other
    repository.reset("exp", version)  # nothing left to remove: still fine


# ------------------------------------------------------------------ locations


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/srv/data/exp/v3", RunLocation("/srv/data", "exp", 3)),
        ("/srv/data/exp/v3/", RunLocation("/srv/data", "exp", 3)),
        ("/srv/data/exp", RunLocation("/srv/data", "exp", None)),
        ("/srv/data/exp/", RunLocation("/srv/data", "exp", None)),
        ("data/exp/v0", RunLocation("data", "exp", 0)),
        ("data/exp", RunLocation("data", "exp", None)),
        ("exp/v12", RunLocation(".", "exp", 12)),
        ("exp", RunLocation(".", "exp", None)),
        (Path("data") / "exp" / "v1", RunLocation("data", "exp", 1)),
        ("s3://bucket/prefix/exp/v3", RunLocation("s3://bucket/prefix", "exp", 3)),
        ("s3://bucket/exp", RunLocation("s3://bucket", "exp", None)),
        (
            "s3://bucket/prefix/exp/v3?endpoint_override=localhost:9000&scheme=http",
            RunLocation("s3://bucket/prefix", "exp", 3, "endpoint_override=localhost:9000&scheme=http"),
        ),
        (
            "s3://bucket/prefix/exp/?region=eu-west-1",
            RunLocation("s3://bucket/prefix", "exp", None, "region=eu-west-1"),
        ),
    ],
)
def test_parse_location(given: Any, expected: RunLocation) -> None:
    assert parse_location(given) == expected


def test_a_location_gives_the_store_its_root_and_query() -> None:
    assert parse_location("data/exp/v0").store_location == os.path.join(os.getcwd(), "data")
    assert parse_location("exp").store().location == os.getcwd()
    query = "endpoint_override=localhost:9000&scheme=http"
    assert parse_location(f"s3://bucket/prefix/exp/v3?{query}").store_location == f"s3://bucket/prefix?{query}"


@data_source
def replicate_number(ctx: Any) -> int:
    return ctx["replicate"]


@pipeline_step
def record_value(data: int, ctx: Any) -> int:
    ctx.metrics.add("value", data)
    return data


def test_a_stored_run_is_found_again_from_its_location(store_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run, reopened from ``<root>/<experiment>/v0``; on S3 with the endpoint only in the query."""
    experiment = Experiment(
        replicate_number(),
        Pipeline([record_value()]),
        plugins=[SerialExecution(progress=False), ArtifactPlugin(root_dir=store_root)],
        name="real",
        replicates=2,
    )
    experiment.run()
    location = f"{store_root}/real/v0"
    if store_root.startswith("s3://"):
        endpoint = urlparse(os.environ["CRYSTALLIZE_S3_ENDPOINT"])
        location += f"?endpoint_override={endpoint.netloc}&scheme={endpoint.scheme}"
        monkeypatch.delenv("CRYSTALLIZE_S3_ENDPOINT")  # the query alone must lead the store to the server
    where = parse_location(location)
    assert (where.experiment, where.version) == ("real", 0)
    repository = RunRepository(where.store())
    assert repository.latest("real", require="record") == 0
    run = repository.open("real", 0)
    assert run is not None and run.finished
    assert run.plan["replicates"] == 2
    assert sorted(run.outcomes) == [("baseline", 0), ("baseline", 1)]
    assert repository.metrics("real", 0).num_rows == 2
    assert [r.version for r in repository.runs("real")] == [0]
